#!/usr/bin/env python3
"""What the Python layer adds to `ntklab.empirical_ntk` on section 6's small CNN (f32, N = 256): the whole call
against the extension's call alone (`_core.Model.empirical_ntk` on bytes prepared once), alternated in rounds in
one process, medians in ms. Compare the extension's figure with `entk_in_process` (the Rust harness) run in the
same minutes.

Usage: bench/.venv/bin/pip install ./python && bench/.venv/bin/python bench/python_overhead.py [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import ntklab
from ntklab import _model_and_inputs
from ntklab._arrays import examples_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import entk_cnn_bench as entk  # noqa: E402


def median_ms(fn, calls=150, warmup=30):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    ntklab.keep_freed_memory()  # as bench/python_bench.py
    c, size = 16, 16
    p, feat = entk.draw(c, size, "gap", 0)
    x = np.random.default_rng(1).standard_normal((256, size, size, 3))
    path = os.path.join(tempfile.mkdtemp(prefix="pyoverhead-"), "m.safetensors")
    entk.save_ntklab(p, c, size, "gap", feat, path)
    model = ntklab.load(path)
    core, _ = _model_and_inputs(model, [x, None])
    b, shape = examples_bytes(x, "x", np.float32)
    for r in range(a.rounds):
        whole = median_ms(lambda: ntklab.empirical_ntk(model, x, precision="f32"))
        ext = median_ms(lambda: core.empirical_ntk(b, shape, None, None, True, True))
        print(f"round {r + 1}: ntklab.empirical_ntk {whole:.3f} ms, extension alone {ext:.3f} ms, "
              f"Python layer {whole - ext:.3f} ms")


if __name__ == "__main__":
    main()
