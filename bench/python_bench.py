#!/usr/bin/env python3
"""The Python package against its peers, all in one Python process (issue "A Python package", deliverable 8):

1. `ntklab.stax` kernel_fn vs neural-tangents' jitted kernel_fn: the depth-3 ReLU MLP of section 1 on N x 784
   inputs, and the 3-conv-layer CNTK of section 5 (flatten and GAP readouts), in f64 and f32.
2. `ntklab.empirical_ntk` vs torch.func (vmap(jacrev) + einsum) and neural-tangents' structured derivatives on the
   small CNN of section 6.

Section 1 runs in this process, section 2 in a child process (`--entk-only`): torch's LLVM-based parts abort the
process when they load after jaxlib's, so the child imports torch first and JAX afterwards, as
`entk_cnn_bench.py` does. Every implementation of a section runs in that section's one process.

Every implementation gets warm-up calls for 0.5 s (JIT compilation, thread pools, the clock of idle cores), then
`--repeats` timed calls; medians. JAX runs with jax_enable_x64 (f32 cases pass float32 arrays, which JAX keeps in
float32). Kernels are checked against each other (max relative difference).

`--entk-only f32 --rounds R` times section 2's ntklab and torch.func jacrev+einsum in R alternated rounds instead
(each round: warm-up and `--repeats` calls of one, then of the other) and prints each round's ratio and their
median: on a shared VM whose speed drifts by 20-30 % within minutes, one timing of each side can land in different
spells.

Usage: bench/.venv/bin/pip install ./python && bench/.venv/bin/python bench/python_bench.py [--quick]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

import ntklab  # noqa: E402
from ntklab import stax  # noqa: E402

# As the ntklab CLI does (opt-in for a library: it changes the allocator of the whole process; JAX and torch keep
# their own caching allocators).
ntklab.keep_freed_memory()

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import entk_cnn_bench as entk  # noqa: E402

WARMUP_S = entk.WARMUP_S
timed = entk.timed  # warm-up calls for WARMUP_S, then the timed repeats


def mlp(s):
    layers = []
    for _ in range(3):
        layers += [s.Dense(512, W_std=1.5, b_std=0.1), s.Relu()]
    return s.serial(*layers, s.Dense(1, W_std=1.5, b_std=0.1))


def cnn(s, readout):
    layers = []
    for _ in range(3):
        layers += [s.Conv(64, (3, 3), (1, 1), "SAME", W_std=1.4, b_std=0.1), s.Relu()]
    head = s.Flatten() if readout == "flatten" else s.GlobalAvgPool()
    return s.serial(*layers, head, s.Dense(1, W_std=1.4, b_std=0.1))


def rel(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max()
                 / np.abs(np.asarray(b, dtype=np.float64)).max())


def kernel_case(name, build, x, precision, repeats, rows):
    import jax

    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax as nt_stax

    xd = x.astype(np.float32 if precision == "f32" else np.float64)
    _, _, ours_fn = build(stax)
    _, _, nt_fn = build(nt_stax)
    ours, t_ours = timed(lambda: ours_fn(xd, None, precision=precision), repeats)
    f = jax.jit(lambda v: nt_fn(v, None, ("nngp", "ntk")))
    theirs, t_nt = timed(lambda: f(xd), repeats, sync=jax.block_until_ready)
    m_ours, m_nt = statistics.median(t_ours), statistics.median(t_nt)
    rows.append(f"| {name}, {precision} | {m_ours:.4f} s | {m_nt:.4f} s | **{m_nt / m_ours:.1f}x** | "
                f"{rel(ours.ntk, theirs[1]):.1e} |")
    print(rows[-1], flush=True)


def entk_setup(n):
    """Section 6's small CNN (16 channels, GAP readout) saved and loaded as an ntklab model, its parameters and
    N inputs of 16 x 16 x 3: (model, params, c, feat, x)."""
    import tempfile

    c, size = 16, 16
    p, feat = entk.draw(c, size, "gap", 0)
    x = np.random.default_rng(1).standard_normal((n, size, size, 3))
    path = os.path.join(tempfile.mkdtemp(prefix="pybench-"), "m.safetensors")
    entk.save_ntklab(p, c, size, "gap", feat, path)
    return ntklab.load(path), p, c, feat, x


def entk_case(n, precision, repeats, rows):
    model, p, c, feat, x = entk_setup(n)
    ours, t_ours = timed(lambda: ntklab.empirical_ntk(model, x, precision=precision), repeats)
    peers = entk.torch_ntk(p, c, "gap", feat, x, precision, repeats)
    peers.update(entk.nt_ntk(p, c, "gap", x, precision, repeats, True))
    m_ours = statistics.median(t_ours)
    med = {k: statistics.median(t) for k, (_, t) in peers.items()}
    best = min(med, key=med.get)
    cells = "; ".join(f"{k} {med[k]:.4f} s" for k in sorted(med))
    rows.append(f"| CNN GAP, N = {n}, {precision} | {m_ours:.4f} s | {cells} | **{med[best] / m_ours:.1f}x** "
                f"({best}) | {max(rel(k, ours) for k, _ in peers.values()):.1e} |")
    print(rows[-1], flush=True)


def entk_rounds(n, precision, repeats, rounds):
    """ntklab against torch.func jacrev+einsum in alternated rounds (each: warm-up, then `repeats` timed calls of
    one, then of the other), so that a slow spell of a shared machine weighs on both sides alike: the per-round
    medians, their ratios, and the median ratio."""
    model, p, c, feat, x = entk_setup(n)
    ours = lambda: ntklab.empirical_ntk(model, x, precision=precision)
    theirs = entk.torch_ntk(p, c, "gap", feat, x, precision, repeats, fn_only=True)
    ratios = []
    for r in range(rounds):
        k1, t1 = timed(ours, repeats)
        k2, t2 = timed(theirs, repeats)
        m1, m2 = statistics.median(t1), statistics.median(t2)
        ratios.append(m2 / m1)
        print(f"round {r + 1}: ntklab {m1 * 1e3:.2f} ms, torch.func jacrev+einsum {m2 * 1e3:.2f} ms, "
              f"ratio {m2 / m1:.2f}x, max rel. diff {rel(k2, k1):.1e}", flush=True)
    print(f"median ratio over {rounds} rounds: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, "
          f"max {max(ratios):.2f}x)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--entk-only", choices=["f64", "f32"],
                    help="only section 2 at this precision (run by section 1 as a child process)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="with --entk-only: ntklab and torch.func in this many alternated rounds (median ratio)")
    a = ap.parse_args()
    n_fc, n_flat, n_gap, n_entk = (500, 32, 4, 32) if a.quick else (4000, 256, 16, 256)
    if a.entk_only:
        import torch  # noqa: F401  (before JAX, see the module docstring)

        if a.rounds > 0:
            entk_rounds(n_entk, a.entk_only, a.repeats, a.rounds)
        else:
            entk_case(n_entk, a.entk_only, a.repeats, [])
        return
    import jax
    import neural_tangents as nt

    rng = np.random.default_rng(0)
    print(f"ntklab {ntklab.__version__}, neural-tangents {nt.__version__}, jax {jax.__version__}; "
          f"{os.cpu_count()} CPUs; medians of {a.repeats} after {WARMUP_S} s of warm-up\n")
    rows = ["| case | ntklab.stax | neural-tangents (jit) | ratio | max rel. diff (NTK) |", "|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    x_fc = rng.standard_normal((n_fc, 784))
    x_img = rng.standard_normal((max(n_flat, n_gap), 16, 16, 3))
    for precision in ("f64", "f32"):
        kernel_case(f"MLP depth 3, {n_fc} x 784", mlp, x_fc, precision, a.repeats, rows)
        kernel_case(f"CNTK 3 x conv(64), flatten, N = {n_flat}", lambda s: cnn(s, "flatten"), x_img[:n_flat],
                    precision, a.repeats, rows)
        kernel_case(f"CNTK 3 x conv(64), GAP, N = {n_gap}", lambda s: cnn(s, "gap"), x_img[:n_gap], precision,
                    max(1, a.repeats // 2), rows)
    print(flush=True)
    import subprocess

    print("| case | ntklab.empirical_ntk | peers | ratio to the fastest | max rel. diff |\n|---|---|---|---|---|",
          flush=True)
    for precision in ("f64", "f32"):
        # One child per precision: neural-tangents' jax_enable_x64 is process-wide.
        args = [sys.executable, os.path.abspath(__file__), "--entk-only", precision, "--repeats", str(a.repeats)]
        subprocess.run(args + (["--quick"] if a.quick else []), check=True)


if __name__ == "__main__":
    main()
