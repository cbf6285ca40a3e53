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
from stax_cases import cases, inputs  # noqa: E402

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
