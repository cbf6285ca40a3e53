"""Writes python/tests/fixtures/<case>_{x1,x2,nngp,ntk,nngp12,ntk12}.npy with neural-tangents (made once and
committed; the Python package's tests compare ntklab.stax against them).

Run with the bench venv: bench/.venv/bin/python tools/make_nt_stax_fixtures.py
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "python", "tests")
sys.path.insert(0, TESTS)
from stax_cases import cases, inputs, spatial_cases  # noqa: E402

out = os.path.join(TESTS, "fixtures")
os.makedirs(out, exist_ok=True)
for i, (name, (layer, shape)) in enumerate(cases(stax).items()):
    _, _, kernel_fn = layer
    x1, x2 = inputs(shape, i)
    k11 = kernel_fn(x1, None, ("nngp", "ntk"))
    k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
    for key, v in {"x1": x1, "x2": x2, "nngp": k11.nngp, "ntk": k11.ntk, "nngp12": k12.nngp, "ntk12": k12.ntk}.items():
        np.save(os.path.join(out, f"{name}_{key}.npy"), np.asarray(v, dtype=np.float64))
    print(name, "ok")

# Networks that end on an image: the covariances between output positions, all pairs (N1 x N2 x H x H' x W x W',
# with neural-tangents' spatial axes put back in input order where it reports is_reversed) and each position with
# itself (diagonal_spatial=True: N1 x N2 x H x W).
for i, (name, (layer, shape)) in enumerate(spatial_cases(stax).items()):
    _, _, kernel_fn = layer
    x1, x2 = inputs(shape, 100 + i)
    out_k = {"x1": x1, "x2": x2}
    for tag, b in (("", None), ("12", x2)):
        k = kernel_fn(x1, b)
        if k.is_reversed:
            k = k.reverse()
        out_k.update({f"nngp{tag}": k.nngp, f"ntk{tag}": k.ntk})
        if "pool" not in name:
            # neural-tangents refuses diagonal_spatial=True where pooling needs every pair of positions.
            d = kernel_fn(x1, b, ("nngp", "ntk"), diagonal_spatial=True)
            out_k.update({f"dnngp{tag}": d.nngp, f"dntk{tag}": d.ntk})
    for key, v in out_k.items():
        np.save(os.path.join(out, f"{name}_{key}.npy"), np.asarray(v, dtype=np.float64))
    print(name, "ok")

# predict.gradient_descent_mse on the fc_relu NTK: train and test outputs at several times, from given outputs at 0.
from neural_tangents import predict  # noqa: E402

k_tt = np.load(os.path.join(out, "fc_relu_ntk.npy"))
k_st = np.load(os.path.join(out, "fc_relu_ntk12.npy")).T  # test x train
rng = np.random.default_rng(42)
y = rng.standard_normal((k_tt.shape[0], 2))
f0, f0t = 0.1 * rng.standard_normal(y.shape), 0.1 * rng.standard_normal((k_st.shape[0], 2))
ts = np.array([0.0, 0.3, 2.0, 50.0])
fn = predict.gradient_descent_mse(k_tt, y, learning_rate=0.7, diag_reg=1e-3)
train, test = fn(ts, f0, f0t, k_st)
for key, v in {"y": y, "f0": f0, "f0t": f0t, "ts": ts, "train": train, "test": test}.items():
    np.save(os.path.join(out, f"gd_{key}.npy"), np.asarray(v, dtype=np.float64))
print("gradient_descent_mse ok")

# predict.gp_inference on the cnn_gap kernels (both, as a Kernel), test points x2: means and covariances.
ks = {key: np.load(os.path.join(out, f"cnn_gap_{key}.npy")) for key in ("nngp", "ntk", "nngp12", "ntk12")}
_, _, kf = cases(stax)["cnn_gap"][0]
x2 = np.load(os.path.join(out, "cnn_gap_x2.npy"))
k22 = kf(x2, None, ("nngp", "ntk"))
from collections import namedtuple  # noqa: E402

K = namedtuple("K", "nngp ntk")
k_dd, k_td, k_tt = K(ks["nngp"], ks["ntk"]), K(ks["nngp12"].T, ks["ntk12"].T), K(np.asarray(k22.nngp), np.asarray(k22.ntk))
y = np.random.default_rng(7).standard_normal((k_dd.nngp.shape[0], 2))
res = predict.gp_inference(k_dd, y, diag_reg=1e-4)(("nngp", "ntk"), k_td, k_tt)
np.save(os.path.join(out, "gp_y.npy"), y)
np.save(os.path.join(out, "gp_k22_nngp.npy"), k_tt.nngp)
for g in ("nngp", "ntk"):
    np.save(os.path.join(out, f"gp_{g}_mean.npy"), np.asarray(getattr(res, g).mean, dtype=np.float64))
    np.save(os.path.join(out, f"gp_{g}_cov.npy"), np.asarray(getattr(res, g).covariance, dtype=np.float64))
print("gp_inference ok")
