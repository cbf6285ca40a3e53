"""CNTK benchmark: neural-tangents' jitted kernel_fn on a 3-conv-layer ReLU net (GAP or flatten readout) over N
images of 16 x 16 x 3, against `ntklab kernel` on the same inputs (both f64, or both f32).

Usage: bench/.venv/bin/python bench/cntk_bench.py --n 64 --readout gap --precision f64 [--repeats 3]
Prints one JSON line per tool with the median wall time of the kernel computation (excluding file I/O and, for
neural-tangents, the first call's compilation) and the max relative difference between the two NTKs.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np


def arch(readout):
    conv = "conv(64,3x3,stride=1,padding=same,w_std=1.4,b_std=0.1),relu"
    head = "flatten" if readout == "flatten" else "global_avg_pool"
    return ",".join([conv] * 3 + [head, "dense(1,w_std=1.4,b_std=0.1)"])


def nt_time(x, readout, f64, repeats, batch):
    import jax
    jax.config.update("jax_enable_x64", f64)
    import neural_tangents as nt
    from neural_tangents import stax
    layers = []
    for _ in range(3):
        layers += [stax.Conv(64, (3, 3), (1, 1), "SAME", W_std=1.4, b_std=0.1), stax.Relu()]
    layers += [stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool(), stax.Dense(1, W_std=1.4, b_std=0.1)]
    _, _, kernel_fn = stax.serial(*layers)
    kf = nt.batch(kernel_fn, batch_size=batch, store_on_device=False) if batch else jax.jit(kernel_fn, static_argnames="get")
    xx = x if f64 else x.astype(np.float32)
    times = []
    out = None
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        out = np.asarray(kf(xx, None, "ntk"))
        dt = time.perf_counter() - t0
        if r > 0:
            times.append(dt)
    return float(np.median(times)), out


def ntklab_time(x, readout, f64, repeats, binary):
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), x)
        times = []
        for _ in range(repeats):
            cmd = [binary, "kernel", "--arch", arch(readout), "--x1", "x.npy", "--out", "k", "--force"]
            if not f64:
                cmd.append("--f32")
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, check=True)
            line = [l for l in r.stderr.splitlines() if l.startswith("compute:")][0]
            times.append(float(line.split()[1]))
        return float(np.median(times)), np.load(os.path.join(d, "k", "ntk.npy"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--readout", choices=["gap", "flatten"], default="gap")
    ap.add_argument("--precision", choices=["f64", "f32"], default="f64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nt-batch", type=int, default=0, help="neural-tangents batch size (0: one jitted call)")
    ap.add_argument("--skip-nt", action="store_true")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ntklab"))
    a = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((a.n, 16, 16, 3))
    f64 = a.precision == "f64"
    t_ours, k_ours = ntklab_time(x, a.readout, f64, a.repeats, a.binary)
    print(json.dumps({"tool": "ntklab", "n": a.n, "readout": a.readout, "precision": a.precision, "median_s": t_ours}))
    if not a.skip_nt:
        t_nt, k_nt = nt_time(x, a.readout, f64, a.repeats, a.nt_batch)
        rel = float(np.max(np.abs(k_ours - k_nt)) / np.max(np.abs(k_nt)))
        print(json.dumps({"tool": "neural-tangents", "n": a.n, "readout": a.readout, "precision": a.precision,
                          "median_s": t_nt, "ratio": t_nt / t_ours, "max_rel_diff": rel}))


if __name__ == "__main__":
    main()
