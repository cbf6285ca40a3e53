#!/usr/bin/env python3
"""Rounding of the f32 empirical NTK of section 6's small CNN, ntklab against torch.func, both measured against
ntklab's f64 kernel (which agrees with torch.func's f64 one to ~1e-15): max |error| / max |Theta|, and the median
and max of the per-entry relative error. Section 7's "max rel" column compares the implementations with each
other; this says which of the two f32 results is nearer the exact kernel.

Usage: bench/.venv/bin/pip install ./python && bench/.venv/bin/python bench/entk_precision.py [--n 256]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

import ntklab

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import entk_cnn_bench as entk  # noqa: E402


def errors(got, exact):
    d = np.abs(got - exact)
    return (f"max |err| / max |K| {d.max() / np.abs(exact).max():.2e}, per entry: median {np.median(d / np.abs(exact)):.2e}, "
            f"max {(d / np.abs(exact)).max():.2e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    a = ap.parse_args()
    entk.WARMUP_S = 0.0
    c, size = 16, 16
    p, feat = entk.draw(c, size, "gap", 0)
    x = np.random.default_rng(1).standard_normal((a.n, size, size, 3))
    path = os.path.join(tempfile.mkdtemp(prefix="entk-precision-"), "m.safetensors")
    entk.save_ntklab(p, c, size, "gap", feat, path)
    model = ntklab.load(path)
    exact = ntklab.empirical_ntk(model, x)
    ours = ntklab.empirical_ntk(model, x, precision="f32").astype(np.float64)
    name = "torch.func jacrev+einsum"
    t64 = entk.torch_ntk(p, c, "gap", feat, x, "f64", 1)[name][0]
    t32 = entk.torch_ntk(p, c, "gap", feat, x, "f32", 1)[name][0]
    print(f"torch.func f64 against ntklab f64: {errors(t64, exact)}")
    print(f"ntklab f32:     {errors(ours, exact)}")
    print(f"torch.func f32: {errors(t32, exact)}")


if __name__ == "__main__":
    main()
