#!/usr/bin/env python3
"""Finite-network derivative benchmark: empirical NTK and top Hessian eigenvalue.

Model: MLP 64-512-512-512-1, ReLU, NTK parameterization
    layer(x) = (W_std / sqrt(fan_in)) * x @ W.T + b_std * b,   W, b ~ N(0, 1)
with W_std=1.5, b_std=0.1 (same constants as kernel_bench.py).

1. Empirical NTK Theta(x, x') = J(x) J(x')^T on N=256 inputs (output dim 1, so N x N):
   - neural-tangents `empirical_ntk_fn(apply_fn, implementation=...)` for every
     `nt.NtkImplementation` (JACOBIAN_CONTRACTION=1, NTK_VECTOR_PRODUCTS=2,
     STRUCTURED_DERIVATIVES=3), jit-compiled, compile call excluded;
   - torch.func: (a) vmap(jacrev) + einsum contraction, (b) vjp/jvp NTK-vector products
     vmapped over the N output basis vectors;
   - ntklab: `ntklab ntk --model M.safetensors --x X.npy --out ntk.npy` (see run_ntklab_*).
2. Top Hessian eigenvalue (in the raw NTK-parameterization coordinates) of the MSE loss
   L = 1/(2N) sum_i (f(x_i) - y_i)^2 (ntklab's `--loss mse`) over all parameters, N=2000,
   by 20 Hessian-vector products (power iteration):
   - PyTorch double-backward (autograd.grad with create_graph=True);
   - JAX forward-over-reverse (jvp of grad), for reference;
   - ntklab: `ntklab hessian --model M.safetensors --x X.npy --y Y.npy --top 1 --max-iter 20
     --no-gauss-newton` (Lanczos with a budget of at most 20 Hessian-vector products; it stops
     as soon as the Ritz residual is below 1e-8 relative, so it usually needs fewer), the
     whole process timed (loading, forward/backward caches, products); plus the default command
     with the Gauss-Newton part beside it (timed once). The table also gives seconds per
     Hessian-vector product (equal work) and each eigenvalue's relative distance to the
     converged one.

The weights are drawn once in PyTorch (raw variables W, b ~ N(0, 1)) and written as
safetensors in ntklab's format (see crates/ntklab/src/net/io.rs): nn.Sequential names
(0.weight [512,64], 0.bias [512], 2.weight, 2.bias, 4.weight, 4.bias, 6.weight [1,512],
6.bias [1]) holding the *effective* weights (W_std/sqrt(fan_in) * W, b_std * b, so a plain
nn.Sequential(nn.Linear, nn.ReLU, ...) loads them), with metadata ntklab.arch,
ntklab.parameterization=ntk, ntklab.alpha=1, ntklab.input_dim=64 so ntklab recovers the raw
NTK-parameterization variables. Derivatives on every side are with respect to the raw variables.

Timings: median of --repeats timed runs after one warm-up run.

Usage: bench/.venv/bin/python bench/ntk_hessian_bench.py [--quick] [--dtype f64|f32]
(ntklab computes in f64 always, so --dtype f64, the default, is the equal-precision comparison.)
"""
import argparse
import json
import math
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

D_IN, WIDTH, DEPTH, D_OUT = 64, 512, 3, 1
W_STD, B_STD = 1.5, 0.1
NTKLAB_ARCH = ",".join(
    [f"dense({WIDTH},w_std={W_STD},b_std={B_STD}),relu"] * DEPTH
    + [f"dense({D_OUT},w_std={W_STD},b_std={B_STD})"]
)


def timed(fn, repeats, sync=lambda r: r):
    """Run fn once as warm-up (compile), then `repeats` timed runs; returns (result, first, times)."""
    t0 = time.perf_counter()
    r = sync(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = sync(fn())
        times.append(time.perf_counter() - t0)
    return r, first, times


def summary(name, first, times, **extra):
    d = {"name": name, "first_s": first, "times_s": times, "median_s": statistics.median(times)}
    d.update(extra)
    print(f"# {name}: median {d['median_s']:.3f} s  runs {[round(t, 3) for t in times]}"
          f"  (first {first:.3f} s)", file=sys.stderr, flush=True)
    return d


def rel_diff(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(np.shape(b))
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------
# PyTorch model (shared weights, saved as safetensors)
# --------------------------------------------------------------------------
def build_torch(dtype, seed):
    import torch
    from torch import nn

    class NTKLinear(nn.Module):
        def __init__(self, fan_in, fan_out):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(fan_out, fan_in, dtype=dtype))
            self.bias = nn.Parameter(torch.randn(fan_out, dtype=dtype))
            self.w_scale = W_STD / math.sqrt(fan_in)

        def forward(self, x):
            return self.w_scale * (x @ self.weight.T) + B_STD * self.bias

    torch.manual_seed(seed)
    layers, fan_in = [], D_IN
    for _ in range(DEPTH):
        layers += [NTKLinear(fan_in, WIDTH), nn.ReLU()]
        fan_in = WIDTH
    layers += [NTKLinear(fan_in, D_OUT)]
    return nn.Sequential(*layers)


def save_model(model, path):
    from safetensors.torch import save_file

    # Effective weights (what nn.Linear multiplies by), as ntklab stores them.
    tensors = {}
    for i, m in enumerate(model):
        if hasattr(m, "w_scale"):
            tensors[f"{i}.weight"] = (m.w_scale * m.weight).detach().contiguous()
            tensors[f"{i}.bias"] = (B_STD * m.bias).detach().contiguous()
    meta = {
        "ntklab.arch": NTKLAB_ARCH,
        "ntklab.parameterization": "ntk",
        "ntklab.alpha": "1",
        "ntklab.input_dim": str(D_IN),
        "format": "pt",
    }
    save_file(tensors, path, metadata=meta)
    return list(tensors)


# --------------------------------------------------------------------------
# empirical NTK: torch.func
# --------------------------------------------------------------------------
def torch_ntk(model, x, repeats):
    import torch
    from torch.func import functional_call, jacrev, jvp, vjp, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    def f_batch(p, xb):
        return functional_call(model, p, (xb,))

    def jac_contraction():
        with torch.no_grad():
            jac = vmap(jacrev(f_single), (None, 0))(params, x)  # dict: [N, 1, *pshape]
            jac = [j.flatten(2) for j in jac.values()]
            return sum(torch.einsum("naf,maf->nm", j, j) for j in jac)

    def ntk_vps():
        # Theta = J J^T via N vjp (J^T e_i) followed by jvp (J v): NTK-vector products.
        with torch.no_grad():
            out, vjp_fn = vjp(lambda p: f_batch(p, x), params)
            basis = torch.eye(out.numel(), dtype=out.dtype).view(out.numel(), *out.shape)

            def col(e):
                (ct,) = vjp_fn(e)
                _, tangent_out = jvp(lambda p: f_batch(p, x), (params,), (ct,))
                return tangent_out.reshape(-1)

            return vmap(col)(basis)

    res = {}
    k, first, times = timed(jac_contraction, repeats)
    res["torch.func jacrev+einsum"] = (k.numpy(), summary("torch.func jacrev+einsum", first, times))
    k, first, times = timed(ntk_vps, repeats)
    res["torch.func vjp/jvp (NTK-vector products)"] = (
        k.numpy(), summary("torch.func vjp/jvp (NTK-vector products)", first, times))
    return res


# --------------------------------------------------------------------------
# empirical NTK: neural-tangents
# --------------------------------------------------------------------------
def nt_model_and_params(state):
    """stax model identical to the torch one; params taken from the torch state dict."""
    import jax.numpy as jnp
    from neural_tangents import stax

    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(WIDTH, W_std=W_STD, b_std=B_STD, parameterization="ntk"), stax.Relu()]
    layers += [stax.Dense(D_OUT, W_std=W_STD, b_std=B_STD, parameterization="ntk")]
    _, apply_fn, _ = stax.serial(*layers)
    params = []
    for i in range(2 * DEPTH + 1):
        if f"{i}.weight" in state:
            params.append((jnp.asarray(state[f"{i}.weight"].T), jnp.asarray(state[f"{i}.bias"])))
        else:
            params.append(())
    return apply_fn, params


def nt_ntk(state, x_np, repeats):
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    apply_fn, params = nt_model_and_params(state)
    x = jnp.asarray(x_np)
    res = {}
    for impl in nt.NtkImplementation:
        if impl.name == "AUTO":
            continue
        name = f"neural-tangents empirical_ntk_fn {impl.name} ({int(impl.value)})"
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=impl))
        try:
            k, first, times = timed(lambda: fn(x, None, params), repeats, sync=jax.block_until_ready)
        except Exception as e:  # e.g. out of memory
            print(f"# {name}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
            continue
        res[name] = (np.asarray(k), summary(name, first, times))
    return res


# --------------------------------------------------------------------------
# Hessian top eigenvalue
# --------------------------------------------------------------------------
def torch_hessian_top(model, x, y, iters, repeats, seed):
    import torch

    params = [p for p in model.parameters()]
    def loss_fn(f, y):  # ntklab's mse: 1/(2N) sum (f - y)^2
        return 0.5 * torch.mean((f - y) ** 2)

    def power():
        g = torch.Generator().manual_seed(seed)
        v = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]
        nrm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / nrm for u in v]
        loss = loss_fn(model(x).squeeze(-1), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        lam = None
        for _ in range(iters):
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            lam = sum((a * b).sum() for a, b in zip(hv, v)).item()
            nrm = torch.sqrt(sum((h * h).sum() for h in hv))
            v = [h / nrm for h in hv]
        return lam

    lam, first, times = timed(power, repeats)
    return lam, summary(f"torch double-backward power iteration ({iters} HVPs)", first, times,
                        eigenvalue=lam)


def jax_hessian_top(state, x_np, y_np, iters, repeats, seed):
    import jax
    import jax.numpy as jnp

    apply_fn, params = nt_model_and_params(state)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def loss(p):
        return 0.5 * jnp.mean((apply_fn(p, x)[:, 0] - y) ** 2)

    @jax.jit
    def hvp(p, v):
        return jax.jvp(jax.grad(loss), (p,), (v,))[1]

    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    v0 = [jnp.asarray(rng.standard_normal(l.shape).astype(l.dtype)) for l in leaves]

    def power():
        v = v0
        nrm = jnp.sqrt(sum(jnp.vdot(u, u) for u in v))
        v = [u / nrm for u in v]
        lam = None
        for _ in range(iters):
            hv = jax.tree_util.tree_leaves(hvp(params, jax.tree_util.tree_unflatten(tree, v)))
            lam = float(sum(jnp.vdot(a, b) for a, b in zip(hv, v)))
            nrm = jnp.sqrt(sum(jnp.vdot(h, h) for h in hv))
            v = [h / nrm for h in hv]
        return lam

    lam, first, times = timed(power, repeats)
    return lam, summary(f"JAX jvp-of-grad power iteration ({iters} HVPs)", first, times, eigenvalue=lam)


# --------------------------------------------------------------------------
# ntklab side (commands land later; skipped gracefully until then)
# --------------------------------------------------------------------------
NEEDED_FLAGS = {"ntk": (r"--model\b", r"--x\b", r"--out\b"),
                "hessian": (r"--model\b", r"--x\b", r"--y\b", r"--top\b")}


def ntklab_has(binary, sub):
    """True when `ntklab SUB --help` succeeds and documents the flags used here
    (a stub binary or an early version of the subcommand is skipped)."""
    if not os.path.exists(binary):
        return False
    try:
        r = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, timeout=60)
    except Exception:
        return False
    text = r.stdout + r.stderr
    return r.returncode == 0 and all(re.search(f, text) for f in NEEDED_FLAGS[sub])


FLOAT_RE = re.compile(r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?")


# ---- ntklab: to be finished when `ntklab ntk` / `ntklab hessian` exist ------------------
def run_ntklab_ntk(binary, model_path, x_path, out_dir, repeats, extra=()):
    """`ntklab ntk --model M.safetensors --x X.npy --out ntk.npy`; returns (K, summary) or None."""
    if not ntklab_has(binary, "ntk"):
        print(f"# ntklab ntk: SKIPPED ({binary} has no `ntk` subcommand yet)", file=sys.stderr)
        return None
    out = os.path.join(out_dir, "ntklab_ntk.npy")
    cmd = [binary, "ntk", "--model", model_path, "--x", x_path, "--out", out, *extra]
    r, wall, compute = run_timed(cmd, repeats)
    s = summary("ntklab ntk (process)", float("nan"), wall,
                compute_median_s=statistics.median(compute) if compute else None, cmd=cmd)
    return np.load(out), s


HESS_ROW_RE = re.compile(r"^\s*1\s+(\S+)(?:\s+(\S+))?\s*$", re.M)
PRODUCTS_RE = re.compile(r"Hessian-vector products:\s*(\d+)(?:\s*\(\+\s*(\d+))?")
PARTS_RE = re.compile(r"caches ([0-9.]+) s; Hessian ([0-9.]+) s; Gauss-Newton ([0-9.]+) s")


def run_ntklab_hessian(binary, model_path, x_path, y_path, repeats, max_iter=None, extra=(), label=None):
    """`ntklab hessian --model M --x X.npy --y Y.npy --top 1 [--max-iter K]`;
    returns (eigenvalue, summary) or None. The top eigenvalue is read from the table row `1  <H>  <GN>`."""
    if not ntklab_has(binary, "hessian"):
        print(f"# ntklab hessian: SKIPPED ({binary} has no `hessian` subcommand yet)", file=sys.stderr)
        return None
    cmd = [binary, "hessian", "--model", model_path, "--x", x_path, "--y", y_path, "--top", "1"]
    if max_iter is not None:
        cmd += ["--max-iter", str(max_iter)]
    cmd += list(extra)
    r, wall, compute = run_timed(cmd, repeats)
    m = HESS_ROW_RE.search(r.stdout)
    lam = float(m.group(1)) if m else None
    gn = float(m.group(2)) if (m and m.group(2)) else None
    pm = PRODUCTS_RE.search(r.stderr)
    products = f"{pm.group(1)} H + {pm.group(2) or 0} GN" if pm else "?"
    parts = PARTS_RE.search(r.stderr)
    per_hvp = (float(parts.group(2)) / int(pm.group(1))) if (parts and pm and int(pm.group(1)) > 0) else None
    name = label or ("ntklab hessian --top 1" + ("" if max_iter is None else f" --max-iter {max_iter}")
                     + " " + " ".join(extra)).strip()
    s = summary(f"{name} ({products} products; process)", float("nan"), wall, eigenvalue=lam,
                gauss_newton_top=gn, compute_median_s=statistics.median(compute) if compute else None,
                cmd=cmd, converged="did not reach tol" not in r.stderr, seconds_per_hvp=per_hvp,
                hvps=int(pm.group(1)) if pm else None)
    return lam, s


# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-ntk", type=int, default=256)
    ap.add_argument("--n-hess", type=int, default=2000)
    ap.add_argument("--hvps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="smoke run: N_ntk=32, N_hess=200, 5 HVPs")
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of: nt,torch,jax,ntklab,ntk,hessian")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--ntklab-extra", default="", help="extra args appended to both ntklab commands")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "out", "ntk_hessian"))
    args = ap.parse_args()
    if args.quick:
        args.n_ntk, args.n_hess, args.hvps = 32, 200, 5
    skip = set(s for s in args.skip.split(",") if s)
    os.makedirs(args.out_dir, exist_ok=True)

    if args.dtype == "f64":
        import jax
        jax.config.update("jax_enable_x64", True)
    import torch

    tdtype = torch.float64 if args.dtype == "f64" else torch.float32
    npdtype = np.float64 if args.dtype == "f64" else np.float32
    model = build_torch(tdtype, args.seed)
    model_path = os.path.join(args.out_dir, "M.safetensors")
    names = save_model(model, model_path)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    print(f"# model {model_path}: {names}; {sum(p.numel() for p in model.parameters())} params; "
          f"dtype {args.dtype}; torch threads {torch.get_num_threads()}", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    x_ntk = rng.standard_normal((args.n_ntk, D_IN)).astype(npdtype)
    x_h = rng.standard_normal((args.n_hess, D_IN)).astype(npdtype)
    y_h = rng.standard_normal((args.n_hess,)).astype(npdtype)
    paths = {k: os.path.join(args.out_dir, f"{k}.npy") for k in ("X_ntk", "X_hess", "Y_hess")}
    np.save(paths["X_ntk"], x_ntk)
    np.save(paths["X_hess"], x_h)
    np.save(paths["Y_hess"], y_h)
    extra = args.ntklab_extra.split()

    report = {"dtype": args.dtype, "n_ntk": args.n_ntk, "n_hess": args.n_hess, "hvps": args.hvps,
              "ntk": [], "hessian": []}

    # ---- empirical NTK --------------------------------------------------
    if "ntk" not in skip:
        kernels = {}
        if "torch" not in skip:
            kernels.update(torch_ntk(model, torch.from_numpy(x_ntk), args.repeats))
        if "nt" not in skip:
            kernels.update(nt_ntk(state, x_ntk, args.repeats))
        if "ntklab" not in skip:
            try:
                r = run_ntklab_ntk(args.bin, model_path, paths["X_ntk"], args.out_dir, args.repeats, extra)
            except Exception as e:
                print(f"# ntklab ntk: FAILED {e}", file=sys.stderr)
                r = None
            if r is not None:
                kernels["ntklab ntk"] = r
        ref_name = next(iter(kernels), None)
        for name, (k, s) in kernels.items():
            s["max_rel_diff_vs_" + ref_name] = rel_diff(k, kernels[ref_name][0])
            report["ntk"].append(s)

    # ---- Hessian top eigenvalue -----------------------------------------
    if "hessian" not in skip:
        if "torch" not in skip:
            lam, s = torch_hessian_top(model, torch.from_numpy(x_h), torch.from_numpy(y_h),
                                       args.hvps, args.repeats, args.seed)
            report["hessian"].append(s)
        if "jax" not in skip:
            lam, s = jax_hessian_top(state, x_h, y_h, args.hvps, args.repeats, args.seed)
            report["hessian"].append(s)
        if "ntklab" not in skip:
            try:
                r = run_ntklab_hessian(args.bin, model_path, paths["X_hess"], paths["Y_hess"],
                                       args.repeats, max_iter=args.hvps,
                                       extra=list(extra) + ["--no-gauss-newton"])
                if r is not None:
                    report["hessian"].append(r[1])
                    # A looser residual tolerance: the Ritz residual bounds the eigenvalue error by
                    # ||r|| (and by ||r||^2 / gap for a separated eigenvalue); the table shows the result.
                    r = run_ntklab_hessian(args.bin, model_path, paths["X_hess"], paths["Y_hess"],
                                           args.repeats, max_iter=args.hvps,
                                           extra=list(extra) + ["--no-gauss-newton", "--tol", "1e-6"])
                    report["hessian"].append(r[1])
                    # The default command: Hessian and Gauss-Newton spectra, converged Lanczos, timed once.
                    r = run_ntklab_hessian(args.bin, model_path, paths["X_hess"], paths["Y_hess"], 1,
                                           extra=extra,
                                           label="ntklab hessian --top 1 (default: with the Gauss-Newton part)")
                    report["hessian"].append(r[1])
            except Exception as e:
                print(f"# ntklab hessian: FAILED {e}", file=sys.stderr)

    with open(os.path.join(args.out_dir, "results.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=str)

    print(f"\n### Empirical NTK, MLP {D_IN}-{WIDTH}-{WIDTH}-{WIDTH}-{D_OUT} ReLU (NTK param.), "
          f"N={args.n_ntk}, {args.dtype}, median of {args.repeats}\n")
    print("| implementation | seconds | max rel diff vs first row |")
    print("|---|---|---|")
    for s in report["ntk"]:
        d = [v for k, v in s.items() if k.startswith("max_rel_diff")]
        c = s.get("compute_median_s")
        secs = f"{s['median_s']:.3f}" + (f" (compute {c:.3f})" if c is not None else "")
        print(f"| {s['name']} | {secs} | {d[0]:.1e} |")
    print(f"\n### Top Hessian eigenvalue (MSE 1/(2N) sum (f-y)^2), N={args.n_hess}, {args.hvps} HVPs power "
          f"iteration, {args.dtype}, median of {args.repeats}\n")
    # Reference eigenvalue: the converged Lanczos run (the default command), else the last row.
    ref = next((s.get("eigenvalue") for s in report["hessian"] if "default" in s["name"]), None)
    print("| implementation | seconds | seconds per HVP | eigenvalue | rel. distance to converged |")
    print("|---|---|---|---|---|")
    for s in report["hessian"]:
        lam = s.get("eigenvalue")
        c = s.get("compute_median_s")
        secs = f"{s['median_s']:.3f}" + (f" (compute {c:.3f})" if c is not None else "")
        per = s.get("seconds_per_hvp")
        if per is None and "HVPs)" in s["name"]:
            per = s["median_s"] / args.hvps
        dist = "n/a" if (lam is None or not ref) else f"{abs(lam - ref) / abs(ref):.1e}"
        print(f"| {s['name']} | {secs} | {'n/a' if per is None else f'{per:.4f}'} | "
              f"{'n/a' if lam is None else f'{lam:.10g}'} | {dist} |")
    torch_row = next((s for s in report["hessian"] if s["name"].startswith("torch")), None)
    for n in report["hessian"]:
        if torch_row is None or "no-gauss-newton" not in n["name"]:
            continue
        tol = "1e-6" if "--tol 1e-6" in n["name"] else "1e-8 (default)"
        line = (f"\nPyTorch / ntklab at tol {tol}, whole ntklab process: "
                f"{torch_row['median_s'] / n['median_s']:.2f}x")
        if n.get("seconds_per_hvp"):
            line += f"; per Hessian-vector product: {torch_row['median_s'] / args.hvps / n['seconds_per_hvp']:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
