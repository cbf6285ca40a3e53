"""Finite networks from Python: model files and PyTorch nn.Sequential, against the CLI (bit for bit) and
against torch's own derivatives (when torch is installed)."""

import json
import os
import subprocess
import tempfile

import numpy as np
import pytest

import ntklab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("NTKLAB_BIN", os.path.join(ROOT, "target", "release", "ntklab"))
needs_cli = pytest.mark.skipif(not os.path.exists(CLI), reason=f"no CLI binary at {CLI} (cargo build --release)")


def run(*args):
    return subprocess.run([CLI, *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def models():
    with tempfile.TemporaryDirectory() as d:
        mlp = os.path.join(d, "mlp.safetensors")
        cnn = os.path.join(d, "cnn.safetensors")
        if os.path.exists(CLI):
            run("init", "--arch", "dense(16,w_std=1.4,b_std=0.1),tanh,dense(16,b_std=0.1),relu,dense(2)",
                "--input-dim", "5", "--seed", "3", "--out", mlp)
            run("init", "--arch", "conv(4,3x3,padding=same,w_std=1.3,b_std=0.2),relu,global_avg_pool,dense(1)",
                "--input-shape", "6x5x2", "--seed", "4", "--out", cnn)
        yield d, mlp, cnn


@needs_cli
@pytest.mark.parametrize("which", ["mlp", "cnn"])
@pytest.mark.parametrize("precision", ["f64", "f32"])
@pytest.mark.parametrize("trace", [True, False])
def test_empirical_ntk_equals_the_cli(models, which, precision, trace):
    d, mlp, cnn = models
    path = mlp if which == "mlp" else cnn
    rng = np.random.default_rng(5)
    shape = (5,) if which == "mlp" else (6, 5, 2)
    x1, x2 = rng.standard_normal((7,) + shape), rng.standard_normal((4,) + shape)
    np.save(os.path.join(d, "x1.npy"), x1)
    np.save(os.path.join(d, "x2.npy"), x2)
    out = os.path.join(d, f"k_{which}_{precision}_{trace}.npy")
    args = ["ntk", "--model", path, "--x", os.path.join(d, "x1.npy"), "--x2", os.path.join(d, "x2.npy"),
            "--out", out, "--precision", precision]
    run(*(args if trace else args + ["--full"]))
    got = ntklab.empirical_ntk(path, x1, x2, trace=trace, precision=precision)
    want = np.load(out)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # The same through a loaded Model.
    assert np.array_equal(ntklab.empirical_ntk(ntklab.load(path), x1, x2, trace=trace, precision=precision), want)


@needs_cli
def test_hessian_eigs_equal_the_cli(models):
    d, mlp, _ = models
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 2))
    np.save(os.path.join(d, "hx.npy"), x)
    np.save(os.path.join(d, "hy.npy"), y)
    js = os.path.join(d, "h.json")
    run("hessian", "--model", mlp, "--x", os.path.join(d, "hx.npy"), "--y", os.path.join(d, "hy.npy"), "--top", "3",
        "--no-gauss-newton", "--json", js)
    want = json.load(open(js))["hessian"]["eigenvalues"]
    got = ntklab.hessian_eigs(mlp, x, y, k=3)
    assert list(got) == want


@needs_cli
def test_model_properties_and_errors(models):
    _, mlp, cnn = models
    m = ntklab.load(mlp)
    assert m.output_dim == 2 and m.input_shape == [5] and m.num_params == 5 * 16 + 16 + 16 * 16 + 16 + 16 * 2
    assert ntklab.load(cnn).input_shape == [6, 5, 2]
    with pytest.raises(ValueError, match="5 features|features per row|columns"):
        ntklab.empirical_ntk(m, np.ones((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        ntklab.empirical_ntk(cnn, np.ones((3, 5, 6, 2)))
    with pytest.raises(ValueError, match="y has shape"):
        ntklab.hessian_eigs(m, np.ones((3, 5)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="loss"):
        ntklab.hessian_eigs(m, np.ones((3, 5)), np.ones((3, 2)), loss="hinge")
    with pytest.raises(ValueError, match="k 0 is out of range: it must be between 1 and the number of parameters"):
        ntklab.hessian_eigs(m, np.ones((3, 5)), np.ones((3, 2)), k=0)
    with pytest.raises(ValueError, match="max_iter 3 is smaller than k 5"):
        ntklab.hessian_eigs(m, np.ones((3, 5)), np.ones((3, 2)), k=5, max_iter=3)
    with pytest.raises(TypeError, match="model must be"):
        ntklab.empirical_ntk(42, np.ones((3, 5)))
    for bad in ({"k": -1}, {"seed": -1}, {"max_iter": -1}):
        with pytest.raises(ValueError, match=">= 0"):
            ntklab.hessian_eigs(m, np.ones((3, 5)), np.ones((3, 2)), **bad)
    with pytest.raises(TypeError, match="targets"):
        ntklab.hessian_eigs(m, np.ones((3, 5)), None)
    # A bytes path is a path.
    x = np.linspace(-1, 1, 15).reshape(3, 5)
    assert np.array_equal(ntklab.empirical_ntk(os.fsencode(mlp), x), ntklab.empirical_ntk(m, x))
    # A Jacobian past float64's range is an error, not a kernel of inf.
    with pytest.raises(ValueError, match="overflowed|not finite"):
        ntklab.empirical_ntk(m, np.full((2, 5), 1e300))
    with pytest.raises(ValueError):
        ntklab.load(os.path.join(os.path.dirname(mlp), "missing.safetensors"))


# ---- PyTorch (skipped without torch) ---------------------------------------------------------------------------


def torch_jacobian(model, x):
    """J (N k x P) of a torch model at x by torch.func, rows i k + a, columns in named_parameters order."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, jacrev

    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    n, k = x.shape[0], model(x).shape[1]
    return torch.cat([jac[name].reshape(n * k, -1) for name in params], dim=1).numpy()


def test_torch_mlp_empirical_ntk_and_hessian():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.GELU(),
                                torch.nn.Linear(12, 3)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    j = torch_jacobian(model, x)
    full = j @ j.T  # rows i k + a, as ntklab's full mode
    got = ntklab.empirical_ntk(model, x, trace=False)
    # Both are sums of ~400 products of O(1) terms in float64: 1e-12 relative.
    assert np.abs(got - full).max() <= 1e-12 * np.abs(full).max()
    tr = ntklab.empirical_ntk(model, x)
    assert np.abs(tr - np.einsum("iaja->ij", full.reshape(6, 3, 6, 3))).max() <= 1e-12 * np.abs(full).max()
    # The loss Hessian (mean squared error, 1/(2N) sum ||f - y||^2) against torch's explicit Hessian.
    y = torch.randn(6, 3, dtype=torch.float64)
    params = [p for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]

    def loss_of(v):
        chunks = torch.split(v, sizes)
        p = {name: c.reshape(q.shape) for (name, q), c in zip(model.named_parameters(), chunks)}
        out = torch.func.functional_call(model, p, (x,))
        return 0.5 * ((out - y) ** 2).sum() / x.shape[0]

    h = torch.autograd.functional.hessian(loss_of, flat).numpy()
    want = np.sort(np.linalg.eigvalsh(h))[::-1][:3]
    got = ntklab.hessian_eigs(model, x, y, k=3)
    assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max(), (got, want)


def test_torch_cnn_takes_nchw_tensors():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(3, 2, 2), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 3, 2)).double()
    x = torch.randn(5, 2, 5, 4, dtype=torch.float64)  # N C H W
    j = torch_jacobian(model, x)
    got = ntklab.empirical_ntk(model, x, trace=False)
    assert np.abs(got - j @ j.T).max() <= 1e-12 * np.abs(j @ j.T).max()


def test_torch_tensors_are_checked_and_read_as_nchw_everywhere():
    torch = pytest.importorskip("torch")
    from ntklab import stax

    # stax functions read a torch image tensor in torch's layout, as empirical_ntk does.
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Conv(3, (2, 2)), stax.Relu(), stax.Flatten(), stax.Dense(1))
    x = np.random.default_rng(0).standard_normal((4, 5, 6, 2))  # N H W C
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # N C H W
    assert np.array_equal(kernel_fn(t).ntk, kernel_fn(x).ntk)
    _, params = init_fn(0, (-1, 5, 6, 2))
    assert np.array_equal(apply_fn(params, t), apply_fn(params, x))
    assert np.array_equal(ntklab.empirical_ntk(params, t), ntklab.empirical_ntk(params, x))
    # Not real numbers: refused as numpy arrays of those dtypes are.
    m = ntklab.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 1)))
    for dtype in (torch.bool, torch.complex64):
        with pytest.raises(TypeError, match="real numbers"):
            ntklab.empirical_ntk(m, torch.ones(2, 3, dtype=dtype))
        with pytest.raises(TypeError, match="real numbers"):
            kernel_fn(torch.ones(2, 2, 5, 6, dtype=dtype))
    b = torch.linspace(-1, 1, 6, dtype=torch.bfloat16).reshape(2, 3)
    assert np.array_equal(ntklab.empirical_ntk(m, b), ntklab.empirical_ntk(m, b.float().numpy()))


def test_torch_unsupported_layers_are_named():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="layer 1: Sigmoid"):
        ntklab.empirical_ntk(model, np.ones((2, 3)))
    # torch's Linear straight after a convolution maps the width axis of N C H W, not the channels.
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="layer 2: a Linear on images"):
        ntklab.from_torch(model)
    # Likewise a Linear first on images, and after a pooling.
    with pytest.raises(ValueError, match="layer 0: a Linear on images"):
        ntklab.empirical_ntk(torch.nn.Sequential(torch.nn.Linear(2, 1)), np.ones((2, 3, 3, 2)))
    pooled = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="layer 1: a Linear on images"):
        ntklab.from_torch(pooled)


def test_torch_round_trip_with_dropped_and_merged_modules():
    # Identity is dropped and AdaptiveAvgPool + Flatten merge into one ntklab layer, so ntklab's layer indices
    # differ from torch's: parameters must still land on the right layers, and go back into torch.
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    layers = [torch.nn.Conv2d(2, 3, 3, padding="same"), torch.nn.Identity(), torch.nn.ReLU(),
              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)]
    model = torch.nn.Sequential(*layers).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    m = ntklab.from_torch(model, (5, 5, 2))
    _, apply_fn, _ = ntklab.stax.Identity()  # any layer's apply_fn runs a Model
    got = apply_fn(m, np.moveaxis(x.numpy(), 1, -1))
    want = model(x).detach().numpy()
    assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()
    # Back into a fresh torch module of the same structure: the same outputs.
    other = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding="same"), torch.nn.Identity(), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)).double()
    ntklab.to_torch(m, other)
    assert np.abs(other(x).detach().numpy() - want).max() <= 1e-13 * np.abs(want).max()
    assert set(ntklab.state_dict(m)) == {"0.weight", "0.bias", "3.weight", "3.bias"}
