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
