"""ntklab.stax against neural-tangents (committed fixtures), against the CLI (bit for bit), and its input
conventions and errors."""

import os
import subprocess
import tempfile

import numpy as np
import pytest

from ntklab import stax
from stax_cases import cases, spatial_cases

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("NTKLAB_BIN", os.path.join(ROOT, "target", "release", "ntklab"))

CASES = cases(stax)


def fixture(name, key):
    return np.load(os.path.join(FIXTURES, f"{name}_{key}.npy"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_neural_tangents(name):
    # neural-tangents evaluates the same closed-form duals in float64 (jax_enable_x64) along a different route
    # (its own recursion and conv implementation): agreement to 1e-11 relative is what rounding through a few
    # layers allows, and a convention mismatch (parameterization, padding, pooling) shows up at 1e-2 or more.
    # Exception: where an example meets itself, neural-tangents takes arccos of a rounded cosine near 1, and
    # arccos(1 - eps) ~ sqrt(2 eps) ~ 2e-8 (ntklab evaluates the angle without that cancellation), so entries
    # of the self-kernel's diagonal are compared to 1e-7.
    layer, _ = CASES[name]
    _, _, kernel_fn = layer
    x1, x2 = fixture(name, "x1"), fixture(name, "x2")
    k11, k12 = kernel_fn(x1), kernel_fn(x1, x2)
    for got, key in [(k11.nngp, "nngp"), (k11.ntk, "ntk"), (k12.nngp, "nngp12"), (k12.ntk, "ntk12")]:
        want = fixture(name, key)
        assert got.shape == want.shape
        scale = np.abs(want).max()
        diff = np.abs(got - want)
        if key in ("nngp", "ntk"):
            assert np.diag(diff).max() <= 1e-7 * scale, f"{name} {key} diagonal: {np.diag(diff).max() / scale:.2e}"
            np.fill_diagonal(diff, 0.0)
        assert diff.max() <= 1e-11 * scale, f"{name} {key}: {diff.max() / scale:.2e}"


SPATIAL = spatial_cases(stax)


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_networks_that_end_on_an_image_give_covariances_between_positions(name):
    # neural-tangents' covariances between output positions (spatial axes in input order), all pairs and each
    # position with itself; tolerances as in test_equals_neural_tangents (an example with itself: 1e-7).
    layer, _ = SPATIAL[name]
    _, _, kernel_fn = layer
    x1, x2 = fixture(name, "x1"), fixture(name, "x2")
    n1 = x1.shape[0]
    for tag, b in (("", None), ("12", x2)):
        for diag in (False, True):
            key = f"{'d' if diag else ''}{{}}{tag}"
            if diag and not os.path.exists(os.path.join(FIXTURES, f"{name}_{key.format('nngp')}.npy")):
                continue  # neural-tangents has no diagonal where pooling needs every pair
            k = kernel_fn(x1, b, diagonal_spatial=diag)
            for what in ("nngp", "ntk"):
                want, got = fixture(name, key.format(what)), getattr(k, what)
                assert got.shape == want.shape, f"{name} {key.format(what)}: {got.shape} vs {want.shape}"
                scale = np.abs(want).max()
                diff = np.abs(got - want)
                if b is None:
                    self_pairs = diff[np.arange(n1), np.arange(n1)]
                    assert self_pairs.max() <= 1e-7 * scale, f"{name} {key.format(what)} self pairs"
                    diff[np.arange(n1), np.arange(n1)] = 0.0
                assert diff.max() <= 1e-11 * scale, f"{name} {key.format(what)}: {diff.max() / scale:.2e}"
    # The symmetric kernel is exactly symmetric: pair (i, j) at positions (a, b) is pair (j, i) at (b, a).
    k = kernel_fn(x1).ntk
    assert np.array_equal(k, k.transpose(1, 0, 3, 2, 5, 4))
    # Pooled over all pairs of positions, it is the kernel of the network with GlobalAvgPool on top.
    gap = stax.serial(layer, stax.GlobalAvgPool())[2](x1).ntk
    assert np.allclose(k.mean(axis=(2, 3, 4, 5)), gap, rtol=1e-12, atol=0)


@pytest.mark.skipif(not os.path.exists(CLI), reason=f"no CLI binary at {CLI} (cargo build --release)")
@pytest.mark.parametrize("name", ["fc_relu", "residual", "cnn_gap"])
@pytest.mark.parametrize("precision", ["f64", "f32"])
def test_equals_the_cli_bit_for_bit(name, precision):
    layer, _ = CASES[name]
    _, _, kernel_fn = layer
    x1, x2 = fixture(name, "x1"), fixture(name, "x2")
    arch, p = kernel_fn.arch()
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x1.npy"), x1)
        np.save(os.path.join(d, "x2.npy"), x2)
        cmd = [CLI, "kernel", "--arch", arch, "--parameterization", p, "--x1", os.path.join(d, "x1.npy"),
               "--x2", os.path.join(d, "x2.npy"), "--out", os.path.join(d, "k")]
        if precision == "f32":
            cmd.append("--f32")
        subprocess.run(cmd, check=True, capture_output=True)
        k = kernel_fn(x1, x2, precision=precision)
        for key in ["nngp", "ntk"]:
            cli = np.load(os.path.join(d, "k", f"{key}.npy"))
            got = getattr(k, key)
            assert got.dtype == cli.dtype
            assert np.array_equal(got, cli), f"{name} {key} {precision}"


def test_any_dtype_and_memory_order():
    _, _, kernel_fn = stax.serial(stax.Dense(3, W_std=1.4, b_std=0.2), stax.Relu(), stax.Dense(1))
    xi = np.arange(12, dtype=np.int32).reshape(4, 3) - 5
    ref = kernel_fn(xi.astype(np.float64))
    for x in [xi, xi.astype(np.int64), xi.astype(np.float32), np.asfortranarray(xi.astype(np.float64)),
              xi.astype(np.float64)[:, ::-1][:, ::-1], xi.tolist()]:
        k = kernel_fn(x)
        assert np.array_equal(k.nngp, ref.nngp) and np.array_equal(k.ntk, ref.ntk)
    # Results are owned, writable arrays.
    ref.ntk[0, 0] = 1.0


def test_get_selects_kernels():
    _, _, kernel_fn = stax.serial(stax.Dense(3), stax.Erf(), stax.Dense(1))
    x = np.random.default_rng(0).standard_normal((3, 2))
    both = kernel_fn(x)
    assert np.array_equal(kernel_fn(x, get="ntk"), both.ntk)
    only = kernel_fn(x, get=("nngp",))
    assert only._fields == ("nngp",) and np.array_equal(only.nngp, both.nngp)
    f32 = kernel_fn(x, precision="f32")
    assert f32.ntk.dtype == np.float32
    assert np.abs(f32.ntk - both.ntk).max() <= 1e-5 * np.abs(both.ntk).max()


def test_errors_name_the_problem():
    _, _, kernel_fn = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(1))
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="non-finite value at index"):
        kernel_fn(np.array([[1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="N x d"):
        kernel_fn(np.ones(3))
    with pytest.raises(ValueError, match="3 features"):
        kernel_fn(x, np.ones((2, 4)))
    with pytest.raises(TypeError, match="real numbers"):
        kernel_fn(np.ones((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="real numbers"):
        kernel_fn(np.ones((2, 3), dtype=complex))
    with pytest.raises(ValueError, match="get must be"):
        kernel_fn(x, get="hessian")
    with pytest.raises(ValueError, match="precision"):
        kernel_fn(x, precision="f16")
    with pytest.raises(ValueError, match="parameterization"):
        stax.Dense(3, parameterization="mean_field")
    with pytest.raises(ValueError, match="different parameterizations"):
        stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(1, parameterization="standard"))[2](x)
    with pytest.raises(ValueError, match="branches"):
        stax.serial(stax.Dense(3), stax.FanOut(2))[2](x)
    with pytest.raises(ValueError, match="padding"):
        stax.Conv(3, (3, 3), padding="REFLECT")
    with pytest.raises(TypeError, match="ntklab.stax layers"):
        stax.serial(stax.Dense(3), lambda z: z)
    # The core's own checks arrive as ValueError with its message (an image net on feature vectors).
    with pytest.raises(ValueError):
        stax.serial(stax.Conv(2, (3, 3)), stax.Flatten(), stax.Dense(1))[2](x)
    with pytest.raises(ValueError, match="input_shape"):
        stax.Dense(3)[0](0, (3,))
    # Fractional widths and strides of the wrong length are refused, not truncated or repeated.
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        stax.Dense(2.5)
    with pytest.raises(ValueError, match="out_chan must be a positive integer"):
        stax.Conv(0, (3, 3))
    with pytest.raises(ValueError, match="one entry per window axis"):
        stax.Conv(2, (3, 3), strides=(2,))
    with pytest.raises(ValueError, match="one entry per window axis"):
        stax.AvgPool((2, 2), strides=(2, 2, 2))


def test_kernels_past_the_float_range_are_errors():
    # neural-tangents returns NaN here; ntklab names the entry and the cause, for dense, DAG and conv networks.
    x = np.random.default_rng(0).standard_normal((5, 4, 4, 3))
    x[2] *= 1e160
    nets = [stax.serial(stax.Flatten(), stax.Dense(8), stax.Relu(), stax.Dense(1)),
            stax.serial(stax.Flatten(), stax.Dense(8), stax.FanOut(2),
                        stax.parallel(stax.serial(stax.Relu(), stax.Dense(8)), stax.Identity()), stax.FanInSum(),
                        stax.Relu(), stax.Dense(1)),
            stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))]
    for net in nets:
        for x1, x2 in [(x, None), (x, x[:2]), (x[:2], x)]:
            with pytest.raises(ValueError, match="kernel is not finite"):
                net[2](x1 if net is nets[2] else x1.reshape(len(x1), -1), None if x2 is None else
                       (x2 if net is nets[2] else x2.reshape(len(x2), -1)))
    with pytest.raises(ValueError, match="kernel is not finite"):
        stax.serial(stax.Dense(4), stax.Exp(1, 50), stax.Dense(1))[2](np.ones((3, 2)))


def test_neural_tangents_arguments_that_change_nothing_here():
    # do_stabilize (neural-tangents' float32 rescaling of the arccos duals) and apply_fn's rng (for stochastic
    # layers) are accepted, and give the same values as without them.
    x = np.random.default_rng(0).standard_normal((3, 4))
    plain = stax.serial(stax.Dense(5, b_std=0.1), stax.Relu(), stax.Dense(3), stax.LeakyRelu(0.1),
                        stax.Dense(3), stax.ABRelu(-0.5, 1.0), stax.Dense(3), stax.Abs(), stax.Dense(1))
    flagged = stax.serial(stax.Dense(5, b_std=0.1), stax.Relu(do_stabilize=True), stax.Dense(3),
                          stax.LeakyRelu(0.1, do_stabilize=True), stax.Dense(3),
                          stax.ABRelu(-0.5, 1.0, do_stabilize=True), stax.Dense(3), stax.Abs(do_stabilize=True),
                          stax.Dense(1))
    assert np.array_equal(plain[2](x).ntk, flagged[2](x).ntk)
    _, params = plain[0](3, (-1, 4))
    assert np.array_equal(plain[1](params, x, rng=np.array([0, 1], dtype=np.uint32)), plain[1](params, x))
    # The width scalings s (standard parameterization only; (1, 1) is the plain one) and kernel_fn's
    # diagonal_batch (a memory hint in neural-tangents).
    scaled = stax.serial(stax.Dense(5, b_std=0.1, s=(1, 1)), stax.Relu(), stax.Dense(1, s=(2, 3)))
    assert np.array_equal(scaled[2](x, diagonal_batch=False).ntk, stax.serial(
        stax.Dense(5, b_std=0.1), stax.Relu(), stax.Dense(1))[2](x).ntk)
    with pytest.raises(ValueError, match="width scalings"):
        stax.Dense(3, parameterization="standard", s=(2, 1))
    with pytest.raises(ValueError, match="width scalings"):
        stax.Conv(3, (3, 3), parameterization="standard", s=(1, 2))
    # diagonal_spatial matters only for a network that ends on an image.
    assert np.array_equal(scaled[2](x, diagonal_spatial=True).ntk, scaled[2](x).ntk)


def test_networks_that_end_on_an_image_give_image_outputs():
    # As neural-tangents: init_fn's output shape and apply_fn's outputs keep the positions (N x H x W x C), in the
    # order Flatten reads them (the same network with a Flatten at the end, the same seed, gives them flat).
    layers = (stax.Conv(3, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(), stax.Dense(2, W_std=1.1))
    init_fn, apply_fn, _ = stax.serial(*layers)
    out_shape, params = init_fn(3, (-1, 5, 4, 2))
    assert out_shape == (-1, 5, 4, 2) and params.output_shape == [5, 4, 2]
    x = np.random.default_rng(2).standard_normal((6, 5, 4, 2))
    y = apply_fn(params, x)
    assert y.shape == (6, 5, 4, 2)
    init_flat, apply_flat, _ = stax.serial(*layers, stax.Flatten())
    flat_shape, flat_params = init_flat(3, (-1, 5, 4, 2))
    assert flat_shape == (-1, 40) and np.array_equal(apply_flat(flat_params, x), y.reshape(6, -1))
    # The dense layer maps the channels at every position: y = h W^T over the last axis, h the conv and relu's
    # outputs (the same weights in a model of those two layers).
    from ntklab import Model

    tensors = {name: np.frombuffer(b).reshape(shape) for name, shape, b in params.tensors()}
    arch, p = stax.serial(*layers[:2])[2].arch()
    head = Model.from_tensors(arch, p, [(n, list(t.shape), t.tobytes()) for n, t in tensors.items()
                                        if n.startswith("0.")], "5x4x2")
    h = apply_fn(head, x)
    assert h.shape == (6, 5, 4, 3)
    manual = np.einsum("nhwc,oc->nhwo", h, tensors["2.weight"].reshape(2, 3))
    assert np.abs(manual - y).max() <= 1e-13 * np.abs(y).max()


@pytest.mark.skipif(not os.path.exists(CLI), reason=f"no CLI binary at {CLI} (cargo build --release)")
def test_init_and_apply_match_the_cli_init():
    init_fn, apply_fn, _ = stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                                       stax.GlobalAvgPool(), stax.Dense(2, W_std=1.1, b_std=0.1))
    out_shape, params = init_fn(7, (-1, 5, 4, 2))
    assert out_shape == (-1, 2) and params.input_shape == [5, 4, 2]
    x = np.random.default_rng(1).standard_normal((6, 5, 4, 2))
    y = apply_fn(params, x)
    assert y.shape == (6, 2) and y.dtype == np.float64
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        subprocess.run([CLI, "init", "--arch", params.arch, "--input-shape", "5x4x2", "--seed", "7", "--out", path],
                       check=True, capture_output=True)
        from ntklab import load

        # Files hold effective weights (w_mult W): loading divides by the multiplier again, one rounding per
        # parameter, so outputs agree to a few ulps rather than bit for bit.
        assert np.abs(apply_fn(load(path), x) - y).max() <= 1e-14 * np.abs(y).max()
        mine = os.path.join(d, "mine.safetensors")
        params.save(mine)
        assert np.abs(apply_fn(load(mine), x) - y).max() <= 1e-14 * np.abs(y).max()
    # Seeds: the same one gives the same network, another a different one; a JAX-style key works too.
    assert np.array_equal(apply_fn(init_fn(7, (-1, 5, 4, 2))[1], x), y)
    assert not np.array_equal(apply_fn(init_fn(8, (-1, 5, 4, 2))[1], x), y)
    key = np.array([0, 7], dtype=np.uint32)
    assert np.array_equal(apply_fn(init_fn(key, (-1, 5, 4, 2))[1], x), y)
    y32 = apply_fn(params, x, precision="f32")
    assert y32.dtype == np.float32 and np.abs(y32 - y).max() <= 1e-5 * np.abs(y).max()
