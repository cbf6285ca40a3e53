"""ntklab.predict against neural-tangents' predict (committed fixtures) and the closed form's limits."""

import os

import numpy as np
import pytest

from ntklab import predict

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fx(key):
    return np.load(os.path.join(FIXTURES, f"{key}.npy"))


def test_gradient_descent_mse_equals_neural_tangents():
    # Same closed form through different eigensolvers (LAPACK via jax vs faer): agreement to rounding, 1e-10
    # relative for 4 x 4 kernels of condition number ~1e2.
    k, kt = fx("fc_relu_ntk"), fx("fc_relu_ntk12").T
    fn = predict.gradient_descent_mse(k, fx("gd_y"), learning_rate=0.7, diag_reg=1e-3)
    train, test = fn(fx("gd_ts"), fx("gd_f0"), fx("gd_f0t"), kt)
    for got, want in [(train, fx("gd_train")), (test, fx("gd_test"))]:
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


def test_limits_shapes_and_modes():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    k = a @ a.T + 0.5 * np.eye(5)
    kt = rng.standard_normal((3, 5))
    y = rng.standard_normal(5)
    fn = predict.gradient_descent_mse(k, y, learning_rate=0.3)
    # t = 0: the outputs at 0; t = inf (or None): the targets on the train set, kernel regression on the test set.
    f0 = rng.standard_normal(5)
    assert np.array_equal(fn(0.0, f0), f0)
    assert np.abs(fn(None, f0) - y).max() <= 1e-12 * np.abs(y).max()
    test_inf = fn(None, None, np.zeros(3), kt)
    assert test_inf.shape == (3,)
    assert np.abs(test_inf - kt @ np.linalg.solve(k, y)).max() <= 1e-12 * np.abs(test_inf).max()
    # Times of any shape stack in front; train-only, test-only and both.
    ts = np.array([[0.5, 1.0], [2.0, 4.0]])
    assert fn(ts).shape == (2, 2, 5)
    both = fn(ts, 0.0, 0.0, kt)
    assert both[0].shape == (2, 2, 5) and both[1].shape == (2, 2, 3)
    # Gradient flow with an explicit Euler integration (a route that never diagonalizes K): with steps 1e-4 the
    # Euler error is O(h) ~ 1e-4 relative.
    f, h = np.zeros(5), 1e-4
    for _ in range(int(1.0 / h)):
        f = f - h * 0.3 / 5 * k @ (f - y)
    assert np.abs(fn(1.0) - f).max() <= 1e-3 * np.abs(f).max()


def test_errors():
    k = np.eye(3)
    with pytest.raises(ValueError, match="N x N"):
        predict.gradient_descent_mse(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="y_train"):
        predict.gradient_descent_mse(k, np.ones(4))
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse(k, np.ones(3), learning_rate=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        predict.gradient_descent_mse(np.full((3, 3), np.nan), np.ones(3))
    fn = predict.gradient_descent_mse(k, np.ones(3))
    with pytest.raises(ValueError, match="k_test_train"):
        fn(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="times must be"):
        fn(-1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        predict.gradient_descent_mse(-np.eye(3), np.ones(3))(1.0)


def test_gp_inference_equals_neural_tangents():
    # The CNN-GAP kernels of the stax fixtures; neural-tangents' posterior means and covariances (NNGP and NTK,
    # diag_reg 1e-4). Both sides do Cholesky solves in float64 of a 4 x 4 kernel: 1e-9 relative.
    from collections import namedtuple

    K = namedtuple("K", "nngp ntk")
    k_dd = K(fx("cnn_gap_nngp"), fx("cnn_gap_ntk"))
    k_td = K(fx("cnn_gap_nngp12").T, fx("cnn_gap_ntk12").T)
    k_tt = K(fx("gp_k22_nngp"), None)
    res = predict.gp_inference(k_dd, fx("gp_y"), diag_reg=1e-4)(("nngp", "ntk"), k_td, k_tt)
    for g in ("nngp", "ntk"):
        for part in ("mean", "cov"):
            want = fx(f"gp_{g}_{part}")
            got = getattr(res, g).mean if part == "mean" else getattr(res, g).covariance
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max(), (g, part)
    # Means only without k_test_test; one kernel by name; train-set predictions are the targets.
    fn = predict.gp_inference(k_dd, fx("gp_y"), diag_reg=1e-4)
    assert np.abs(fn("ntk", k_td) - res.ntk.mean).max() <= 1e-12 * np.abs(res.ntk.mean).max()
    assert np.array_equal(fn("nngp"), fx("gp_y"))
    # The NNGP posterior equals the core's GP route (ntklab.predict's Rust gp_posterior) to rounding.
    from ntklab import _core

    t, n = k_td.nngp.shape
    reg = 1e-4 * np.trace(k_dd.nngp) / n
    mean, cov, _ = _core.gp(k_dd.nngp.tobytes(), n, fx("gp_y").tobytes(), 2, np.ascontiguousarray(k_td.nngp).tobytes(),
                            t, np.ascontiguousarray(k_tt.nngp).tobytes(), reg)
    mean = np.frombuffer(mean).reshape(t, 2)
    assert np.abs(mean - res.nngp.mean).max() <= 1e-10 * np.abs(mean).max()


def test_gp_inference_errors():
    with pytest.raises(ValueError, match="positive definite"):
        predict.gp_inference(-np.eye(3), np.ones(3))("nngp", np.ones((2, 3)))
    with pytest.raises(ValueError, match="get must be"):
        predict.gp_inference(np.eye(3), np.ones(3))("gp", np.ones((2, 3)))
    from collections import namedtuple

    K = namedtuple("K", "nngp ntk")
    with pytest.raises(ValueError, match="needs both NTK and NNGP"):
        predict.gp_inference(K(None, np.eye(3)), np.ones(3))("ntk", K(None, np.ones((2, 3))), K(None, np.eye(2)))
    with pytest.raises(ValueError, match="no 'nngp' kernel"):
        predict.gp_inference(K(None, np.eye(3)), np.ones(3))("nngp", K(None, np.ones((2, 3))))


def test_gp_inference_arrays_stand_for_the_kernel_asked_for():
    # An array is the kernel `get` names: enough for means and the NNGP covariance; the NTK covariance also
    # needs the NNGP kernels, which arrays cannot carry (neural-tangents refuses it too).
    k_dd, k_td = fx("cnn_gap_ntk"), fx("cnn_gap_ntk12").T
    y = fx("gp_y")
    fn = predict.gp_inference(k_dd, y, diag_reg=1e-4)
    mean = fn("ntk", k_td)
    want = k_td @ np.linalg.solve(k_dd + 1e-4 * np.trace(k_dd) / 4 * np.eye(4), y)
    assert np.abs(mean - want).max() <= 1e-10 * np.abs(want).max()
    with pytest.raises(ValueError, match="needs both NTK and NNGP"):
        fn("ntk", k_td, np.eye(k_td.shape[0]))
    # neural-tangents' int trace_axes.
    assert np.array_equal(predict.gp_inference(k_dd, y, diag_reg=1e-4, trace_axes=-1)("ntk", k_td), mean)
    gd = predict.gradient_descent_mse(k_dd, y, trace_axes=-1)
    assert np.abs(gd(None) - y).max() <= 1e-8 * np.abs(y).max()
    with pytest.raises(ValueError, match="no targets"):
        predict.gradient_descent_mse(np.zeros((0, 0)), np.zeros((0, 1)))
    with pytest.raises(ValueError, match="trace_axes"):
        predict.gp_inference(k_dd, y, trace_axes=0)
