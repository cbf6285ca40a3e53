#!/usr/bin/env python3
"""Infinite-width kernel benchmark: `ntklab kernel` vs neural-tangents `kernel_fn`.

ReLU MLP of depth 3 (three hidden Dense(512) + ReLU, then Dense(1)), W_std=1.5,
b_std=0.1, NTK parameterization, on X of shape (N, d) = (4000, 784) by default,
at f32 and f64, in one run. Each neural-tangents precision runs in its own
subprocess because `jax_enable_x64` is a process-global flag.

Reported times are medians of >= 3 timed runs, excluding the first (compile /
warm-up) call for JAX (with block_until_ready). For ntklab the whole CLI
process is timed; if it prints a `compute: X s` line on stderr that is parsed
too and reported as the compute-only time (no file I/O).

Correctness: max |ntklab - NT| / max |NT| for nngp and ntk at each precision.

Usage (with the bench venv, see bench/setup.sh):
    bench/.venv/bin/python bench/kernel_bench.py            # N=4000, recorded numbers
    bench/.venv/bin/python bench/kernel_bench.py --quick    # N=500 smoke run
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

from benchutil import run_timed

# Quiet TensorFlow (imported by neural-tangents) and keep JAX on CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "ntklab")

W_STD, B_STD, WIDTH, DEPTH = 1.5, 0.1, 512, 3
NTKLAB_ARCH = ",".join(
    [f"dense({WIDTH},w_std={W_STD},b_std={B_STD}),relu"] * DEPTH
    + [f"dense(1,w_std={W_STD},b_std={B_STD})"]
)

# Tolerances (relative to max |entry|) at which the two libraries "agree".
TOL = {"f64": 1e-10, "f32": 1e-4}


# --------------------------------------------------------------------------
# neural-tangents side (runs in a subprocess per precision)
# --------------------------------------------------------------------------
def nt_worker(args):
    import jax

    if args.precision == "f64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from neural_tangents import stax

    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(WIDTH, W_std=W_STD, b_std=B_STD), stax.Relu()]
    layers += [stax.Dense(1, W_std=W_STD, b_std=B_STD)]
    _, _, kernel_fn = stax.serial(*layers)

    x_np = np.load(os.path.join(args.out_dir, f"X_{args.precision}.npy"))
    x = jnp.asarray(x_np)
    assert x.dtype == (jnp.float64 if args.precision == "f64" else jnp.float32), x.dtype
    f = jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))

    t0 = time.perf_counter()
    k = f(x)
    jax.block_until_ready(k)
    first = time.perf_counter() - t0

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        k = f(x)
        jax.block_until_ready(k)
        times.append(time.perf_counter() - t0)

    nngp, ntk = np.asarray(k[0]), np.asarray(k[1])
    np.save(os.path.join(args.out_dir, f"nt_{args.precision}_nngp.npy"), nngp)
    np.save(os.path.join(args.out_dir, f"nt_{args.precision}_ntk.npy"), ntk)
    print(json.dumps({
        "precision": args.precision,
        "dtype": str(nngp.dtype),
        "first_call_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }))


# --------------------------------------------------------------------------
# ntklab side
# --------------------------------------------------------------------------


def ntklab_has_kernel(binary):
    if not os.path.exists(binary):
        return False
    try:
        r = subprocess.run([binary, "kernel", "--help"], capture_output=True, text=True, timeout=60)
    except Exception:
        return False
    # A placeholder binary (e.g. `fn main() {}`) exits 0 for anything: require real help text.
    return r.returncode == 0 and "--x1" in (r.stdout + r.stderr)


def run_ntklab(binary, precision, out_dir, repeats):
    x_path = os.path.join(out_dir, f"X_{precision}.npy")
    res_dir = os.path.join(out_dir, f"ntklab_{precision}")
    os.makedirs(res_dir, exist_ok=True)
    cmd = [binary, "kernel", "--arch", NTKLAB_ARCH, "--parameterization", "ntk",
           "--x1", x_path, "--out", res_dir]
    if precision == "f32":
        cmd.append("--f32")
    r, wall, compute = run_timed(cmd, repeats)
    out = {
        "cmd": cmd,
        "wall_times_s": wall,
        "wall_median_s": statistics.median(wall),
        "compute_times_s": compute or None,
        "compute_median_s": statistics.median(compute) if compute else None,
        "stderr_tail": r.stderr[-500:],
    }
    return out, res_dir


def rel_diff(a, b, mask=None):
    """max |a - b| / max |b| (over the entries selected by mask, if given)."""
    a = np.asarray(a, dtype=np.float64).reshape(np.shape(b))
    b = np.asarray(b, dtype=np.float64)
    d = np.abs(a - b)
    if mask is not None:
        d = d[mask]
    return float(d.max() / np.abs(b).max())


def exact_diagonal(x):
    """Closed-form diagonal K(x_i, x_i) of the benchmark architecture, in f64.

    On the diagonal the ReLU arc-cosine kernels reduce exactly to E[relu(u)^2] = q/2 and
    E[relu'(u)^2] = 1/2, so this reference has no arccos round-off. It is needed because
    neural-tangents evaluates arccos(cos) with cos = 1 - O(eps) on the diagonal, which
    loses about half the digits there (theta ~ sqrt(eps)) in the NTK's derivative term.
    """
    x = np.asarray(x, dtype=np.float64)
    q = (x * x).sum(1) / x.shape[1]
    t = np.zeros_like(q)
    for _ in range(DEPTH):
        q = W_STD ** 2 * q + B_STD ** 2   # Dense
        t = W_STD ** 2 * t + q
        q, t = q / 2, t / 2               # ReLU
    q = W_STD ** 2 * q + B_STD ** 2       # readout Dense
    t = W_STD ** 2 * t + q
    return {"nngp": q, "ntk": t}


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------
def fmt(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--quick", action="store_true", help="smoke run, N=500")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    ap.add_argument("--precisions", default="f32,f64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="ntklab binary")
    ap.add_argument("--out-dir", default=None, help="default bench/out/kernel_N<n>")
    ap.add_argument("--skip-nt", action="store_true", help="reuse NT results already in out-dir")
    ap.add_argument("--json", default=None, help="also write the results JSON here")
    # internal: NT worker mode
    ap.add_argument("--nt-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="f64", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.nt_worker:
        return nt_worker(args)

    if args.quick:
        args.n = 500
    args.repeats = max(args.repeats, 1)
    out_dir = args.out_dir or os.path.join(HERE, "out", f"kernel_N{args.n}")
    os.makedirs(out_dir, exist_ok=True)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, args.d))
    np.save(os.path.join(out_dir, "X_f64.npy"), x.astype(np.float64))
    np.save(os.path.join(out_dir, "X_f32.npy"), x.astype(np.float32))
    print(f"# N={args.n} d={args.d} seed={args.seed} out={out_dir}", file=sys.stderr)
    print(f"# ntklab arch: {NTKLAB_ARCH}", file=sys.stderr)

    have_ntklab = ntklab_has_kernel(args.bin)
    if not have_ntklab:
        print(f"# WARNING: {args.bin} missing or has no `kernel` subcommand; timing NT only",
              file=sys.stderr)

    results = {"n": args.n, "d": args.d, "seed": args.seed, "repeats": args.repeats,
               "arch": NTKLAB_ARCH, "loadavg_start": os.getloadavg(), "rows": []}
    for p in precisions:
        row = {"precision": p}
        nt_json = os.path.join(out_dir, f"nt_{p}.json")
        if args.skip_nt and os.path.exists(nt_json):
            with open(nt_json) as fh:
                row["nt"] = json.load(fh)
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--nt-worker", "--precision", p,
                   "--out-dir", out_dir, "--repeats", str(args.repeats)]
            print(f"# NT {p} ...", file=sys.stderr, flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                raise SystemExit(f"neural-tangents worker failed for {p}")
            row["nt"] = json.loads(r.stdout.strip().splitlines()[-1])
            with open(nt_json, "w") as fh:
                json.dump(row["nt"], fh)
        print(f"# NT {p}: median {row['nt']['median_s']:.3f} s  runs {row['nt']['times_s']}"
              f"  (first call {row['nt']['first_call_s']:.3f} s)", file=sys.stderr, flush=True)

        if have_ntklab:
            print(f"# ntklab {p} ...", file=sys.stderr, flush=True)
            nk, res_dir = run_ntklab(args.bin, p, out_dir, args.repeats)
            row["ntklab"] = nk
            print(f"# ntklab {p}: wall median {nk['wall_median_s']:.3f} s runs {nk['wall_times_s']};"
                  f" compute median {fmt(nk['compute_median_s'])} s runs {nk['compute_times_s']}",
                  file=sys.stderr, flush=True)
            if nk["compute_times_s"]:
                print(f"# {p} best-of-{args.repeats}: NT {min(row['nt']['times_s']):.3f} s, ntklab compute "
                      f"{min(nk['compute_times_s']):.3f} s -> {min(row['nt']['times_s']) / min(nk['compute_times_s']):.2f}x",
                      file=sys.stderr, flush=True)
            diffs = {}
            exact = exact_diagonal(x)
            offdiag = ~np.eye(args.n, dtype=bool)
            for name in ("nngp", "ntk"):
                mine = np.load(os.path.join(res_dir, f"{name}.npy"))
                ref = np.load(os.path.join(out_dir, f"nt_{p}_{name}.npy"))
                scale = float(np.abs(ref).max())
                diffs[name] = rel_diff(mine, ref)                    # all entries
                diffs[name + "_offdiag"] = rel_diff(mine, ref, offdiag)
                diffs[name + "_diag_ntklab_vs_exact"] = float(
                    np.abs(np.diag(mine).astype(np.float64) - exact[name]).max() / scale)
                diffs[name + "_diag_nt_vs_exact"] = float(
                    np.abs(np.diag(ref).astype(np.float64) - exact[name]).max() / scale)
                diffs[name + "_dtype"] = str(mine.dtype)
                print(f"# {p} {name}: max rel diff ntklab vs NT all {diffs[name]:.2e}, off-diagonal "
                      f"{diffs[name + '_offdiag']:.2e}; diagonal vs closed form: ntklab "
                      f"{diffs[name + '_diag_ntklab_vs_exact']:.2e}, NT {diffs[name + '_diag_nt_vs_exact']:.2e}",
                      file=sys.stderr, flush=True)
            row["max_rel_diff"] = diffs
            tol = TOL.get(p, 1e-4)
            # Agreement: ntklab matches NT off the diagonal, and matches the exact closed form on it
            # (where NT itself is off by ~sqrt(eps), see exact_diagonal).
            row["agree"] = all(diffs[f"{n}_offdiag"] <= tol and diffs[f"{n}_diag_ntklab_vs_exact"] <= tol
                               for n in ("nngp", "ntk"))
            print(f"# {p}: {'OK' if row['agree'] else 'FAIL'} at tol {tol:.0e}", file=sys.stderr, flush=True)
        results["rows"].append(row)

    results["loadavg_end"] = os.getloadavg()
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)

    # markdown table
    print(f"\nN={args.n}, d={args.d}, ReLU depth 3 (width-512 spec, W_std=1.5, b_std=0.1, NTK param.),"
          f" nngp+ntk, median of {args.repeats} timed runs; 1-min load average "
          f"{results['loadavg_start'][0]:.2f} at start, {results['loadavg_end'][0]:.2f} at end\n")
    print("| precision | NT kernel_fn (s) | ntklab compute (s) | ntklab process (s) "
          "| ratio NT/ntklab compute | ratio NT/ntklab process | max rel diff nngp (all) "
          "| max rel diff ntk (all / off-diag) | ntk diagonal err vs closed form (ntklab / NT) | agree |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for row in results["rows"]:
        nt = row["nt"]["median_s"]
        nk = row.get("ntklab")
        if nk is None:
            print(f"| {row['precision']} | {nt:.3f} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        c, w = nk["compute_median_s"], nk["wall_median_s"]
        d = row["max_rel_diff"]
        ok &= row["agree"]
        print(f"| {row['precision']} | {nt:.3f} | {fmt(c)} | {w:.3f} | "
              f"{fmt(nt / c if c else None, 2)}x | {nt / w:.2f}x | {d['nngp']:.1e} | "
              f"{d['ntk']:.1e} / {d['ntk_offdiag']:.1e} | "
              f"{d['ntk_diag_ntklab_vs_exact']:.1e} / {d['ntk_diag_nt_vs_exact']:.1e} | "
              f"{'yes' if row['agree'] else 'NO'} |")
    if not ok:
        print("\nWARNING: ntklab and neural-tangents disagree beyond tolerance "
              f"({TOL}); see stderr.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main() or 0)
