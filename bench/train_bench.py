"""Full-batch GD on an MLP d-512-512-1 (ReLU, MSE, no probes): `ntklab train` against a PyTorch loop, f64 and f32,
in one run. Reports median wall and training-loop times over repeats, and page faults per run (a proxy for
allocations inside the step loop).

Usage: bench/.venv/bin/python bench/train_bench.py [--repeats 5] [--steps 200] [--n 1000] [--d 64] [--width 512]
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchutil import add_allocator_flag, apply_allocator_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NTKLAB = os.path.join(ROOT, "target", "release", "ntklab")
TRAINED_RE = re.compile(r"trained in ([0-9.]+) s")


def ntklab_config(tmp, a, precision):
    text = f"""seed = 0
[data]
name = "teacher"
n = {a.n}
d = {a.d}
[model]
arch = "dense({a.width}),relu,dense({a.width}),relu,dense(1)"
parameterization = "standard"
{'precision = "f32"' if precision == "f32" else ''}
[optimizer]
kind = "gd"
loss = "mse"
lr = 0.05
steps = {a.steps}
[probes]
every = {a.steps}
which = []
"""
    path = os.path.join(tmp, f"gd_{precision}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def time_ntklab(a, precision):
    walls, loops, faults = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ntklab_config(tmp, a, precision)
        for i in range(a.repeats + 1):
            out = os.path.join(tmp, f"run{i}")
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
            t0 = time.perf_counter()
            r = subprocess.run([NTKLAB, "train", "--config", cfg, "--out", out], capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            flt = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
            if i == 0:
                continue
            walls.append(dt)
            faults.append(flt)
            m = TRAINED_RE.search(r.stderr)
            loops.append(float(m.group(1)) if m else float("nan"))
    return walls, loops, faults


def time_torch(a, dtype_name):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    dtype = torch.float64 if dtype_name == "f64" else torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.d, generator=g, dtype=dtype)
    y = torch.randn(a.n, 1, generator=g, dtype=dtype)
    times, faults = [], []
    for i in range(a.repeats + 1):
        torch.manual_seed(i)
        model = torch.nn.Sequential(
            torch.nn.Linear(a.d, a.width), torch.nn.ReLU(),
            torch.nn.Linear(a.width, a.width), torch.nn.ReLU(),
            torch.nn.Linear(a.width, 1),
        ).to(dtype)
        params = list(model.parameters())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = ((model(x) - y) ** 2).sum() / (2 * a.n)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, gr in zip(params, grads):
                    p.sub_(0.05 * gr)
        dt = time.perf_counter() - t0
        flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        if i == 0:
            continue
        times.append(dt)
        faults.append(flt)
    return times, faults


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--precisions", default="f64,f32")
    add_allocator_flag(p)
    a = p.parse_args()
    alloc = apply_allocator_flag(a)
    med = statistics.median
    print(f"GD, MLP {a.d}-{a.width}-{a.width}-1 ReLU, N = {a.n}, {a.steps} steps, MSE; median of {a.repeats} "
          f"(after one warm-up); {os.cpu_count()} CPUs; {alloc}")
    print("| precision | ntklab process (s) | ntklab loop (s) | torch loop (s) | ratio torch/ntklab loop | "
          "page faults ntklab / torch |")
    print("|---|---|---|---|---|---|")
    for prec in a.precisions.split(","):
        try:
            w, l, f = time_ntklab(a, prec)
        except RuntimeError as e:
            print(f"| {prec} | ntklab failed: {str(e).strip().splitlines()[-1]} | | | | |")
            continue
        t, tf = time_torch(a, prec)
        print(f"| {prec} | {med(w):.3f} | {med(l):.3f} | {med(t):.3f} | {med(t) / med(l):.2f}x | "
              f"{int(med(f))} / {int(med(tf))} |")
        print(f"<!-- {prec} raw: ntklab loop {['%.3f' % v for v in l]}, torch {['%.3f' % v for v in t]} -->")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
