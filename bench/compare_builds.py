"""Old build vs new build of ntklab on the benchmark workloads (no peers): the kernel of bench/kernel_bench.py
(N x 784, depth-3 ReLU, f64 and f32), the empirical NTK and the top Hessian eigenvalue of
bench/ntk_hessian_bench.py (MLP 64-512-512-512-1). Runs alternate between the two binaries so both see the same
machine load; reports median `compute:` times (the work without file I/O) and the new/old ratio.

Usage: bench/.venv/bin/python bench/compare_builds.py OLD_BIN NEW_BIN [--repeats 7] [--n 4000]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import run_timed  # noqa: E402

ARCH_K = ",".join(["dense(512,w_std=1.5,b_std=0.1),relu"] * 3 + ["dense(1,w_std=1.5,b_std=0.1)"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=4000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        xk = os.path.join(tmp, "xk.npy")
        np.save(xk, rng.standard_normal((a.n, 784)))
        xn, yn, xh = (os.path.join(tmp, f) for f in ("xn.npy", "yn.npy", "xh.npy"))
        np.save(xn, rng.standard_normal((256, 64)))
        np.save(xh, rng.standard_normal((2000, 64)))
        np.save(yn, rng.standard_normal((2000, 1)))
        model = os.path.join(tmp, "m.safetensors")
        subprocess.run([a.new, "init", "--arch", ARCH_K,
                        "--input-dim", "64", "--seed", "1", "--out", model], check=True, capture_output=True)
        jobs = {
            "kernel f64": lambda b: [b, "kernel", "--arch", ARCH_K, "--x1", xk, "--out", os.path.join(tmp, "k")],
            "kernel f32": lambda b: [b, "kernel", "--arch", ARCH_K, "--x1", xk, "--f32", "--out", os.path.join(tmp, "k")],
            "empirical NTK (N=256)": lambda b: [b, "ntk", "--model", model, "--x", xn, "--out", os.path.join(tmp, "n.npy")],
            "Hessian top-1, 20 HVPs (N=2000)": lambda b: [b, "hessian", "--model", model, "--x", xh, "--y", yn, "--top", "1",
                                                 "--max-iter", "20", "--no-gauss-newton"],
        }
        print(f"load average at start: {os.getloadavg()}")
        print("| workload | old compute (s) | new compute (s) | new/old | old process (s) | new process (s) |")
        print("|---|---|---|---|---|---|")
        for name, cmd in jobs.items():
            res = {"old": ([], []), "new": ([], [])}
            for _ in range(a.repeats):
                for tag, b in (("old", a.old), ("new", a.new)):
                    _, wall, comp = run_timed(cmd(b), 1)
                    res[tag][0].extend(wall)
                    res[tag][1].extend(comp)
            med = {t: (statistics.median(w), statistics.median(c) if c else float("nan")) for t, (w, c) in res.items()}
            print(f"| {name} | {med['old'][1]:.3f} | {med['new'][1]:.3f} | {med['new'][1] / med['old'][1]:.3f} | "
                  f"{med['old'][0]:.3f} | {med['new'][0]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
