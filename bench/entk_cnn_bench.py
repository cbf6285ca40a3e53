#!/usr/bin/env python3
"""Empirical NTK of a small CNN: ntklab against neural-tangents and torch.func, at equal precision.

Model (NTK parameterization, raw variables W, b ~ N(0, 1), derivatives with respect to them):
    conv(C, 3x3, SAME, W_std, b_std) -> relu -> conv(C, 3x3, SAME, W_std, b_std) -> relu
    -> global average pooling (--readout gap) or flatten (--readout flatten) -> dense(1, W_std, b_std)
on N images of S x S x 3 (NHWC), W_std = 1.5, b_std = 0.1; conv layer = (W_std / sqrt(C_in 9)) conv(x, W) + b_std b.

- neural-tangents: `empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=...)` for each of
  JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS and STRUCTURED_DERIVATIVES, jitted, compile excluded;
- torch.func: vmap(jacrev) + einsum (Jacobian contraction), and vjp/jvp NTK-vector products, on a module that
  multiplies its raw parameters by the same constants (NCHW inside, the same images);
- ntklab: `ntklab ntk --model M.safetensors --x X.npy --out K.npy` (the `compute:` line of one cold call, and the
  whole process), and in one process like the peers (`examples/entk_in_process.rs`: warm-up calls for 0.5 s, then repeats).
Every kernel is checked against ntklab's (max relative difference). Times: medians of --repeats runs after warm-up calls for 0.5 s (WARMUP_S).

Usage: bench/.venv/bin/python bench/entk_cnn_bench.py [--n 128] [--size 16] [--channels 16] [--readout gap]
       [--dtype f64|f32] [--repeats 5]
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchutil import add_allocator_flag, apply_allocator_flag, run_timed

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(os.path.dirname(HERE), "target", "release", "ntklab")
# In-process timing harness (crates/ntklab/examples/entk_in_process.rs): `cargo build --release --example
# entk_in_process -p ntklab`. It times ntklab as the Python peers are timed (warm-up calls for 0.5 s, then repeats).
IN_PROCESS = os.path.join(os.path.dirname(HERE), "target", "release", "examples", "entk_in_process")
W_STD, B_STD, K = 1.5, 0.1, 3


# Warm-up before timing: calls for at least this long (at least one). On this VM a core that was idle runs the
# first ~50 ms of work at a lower clock, so a single warm-up call leaves the first repeats slow for everyone.
WARMUP_S = 0.5


def timed(fn, repeats, sync=lambda r: r):
    t_end = time.perf_counter() + WARMUP_S
    r = sync(fn())
    while time.perf_counter() < t_end:
        r = sync(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = sync(fn())
        times.append(time.perf_counter() - t0)
    return r, times


def draw(c, size, readout, seed):
    rng = np.random.default_rng(seed)
    p = {
        "w0": rng.standard_normal((c, 3, K, K)), "b0": rng.standard_normal(c),
        "w2": rng.standard_normal((c, c, K, K)), "b2": rng.standard_normal(c),
    }
    feat = c if readout == "gap" else c * size * size
    p["wr"], p["br"] = rng.standard_normal((1, feat)), rng.standard_normal(1)
    return p, feat


def save_ntklab(p, c, size, readout, feat, path):
    """Effective weights under nn.Sequential names (PyTorch layouts: OIHW, Linear columns in NCHW flatten order)."""
    ridx = 5 if readout == "gap" else 5
    eff = {
        "0.weight": W_STD / np.sqrt(3 * K * K) * p["w0"], "0.bias": B_STD * p["b0"],
        "2.weight": W_STD / np.sqrt(c * K * K) * p["w2"], "2.bias": B_STD * p["b2"],
        f"{ridx}.weight": W_STD / np.sqrt(feat) * p["wr"], f"{ridx}.bias": B_STD * p["br"],
    }
    conv = f"conv({c},3x3,padding=same,w_std={W_STD},b_std={B_STD})"
    arch = f"{conv},relu,{conv},relu,{'global_avg_pool' if readout == 'gap' else 'flatten'},dense(1,w_std={W_STD},b_std={B_STD})"
    meta = {"format": "pt", "ntklab.arch": arch, "ntklab.parameterization": "ntk", "ntklab.alpha": "1",
            "ntklab.input_dim": str(size * size * 3), "ntklab.input_shape": f"{size}x{size}x3"}
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, t in eff.items():
        b = np.ascontiguousarray(t, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def torch_ntk(p, c, readout, feat, x_nhwc, dtype, repeats, fn_only=False):
    """Timed torch.func kernels by name ({name: (kernel, times)}); with `fn_only`, the jacrev+einsum kernel as a
    function (untimed, for alternated rounds)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, jacrev, jvp, vjp, vmap

    torch.set_num_threads(os.cpu_count())
    td = torch.float64 if dtype == "f64" else torch.float32

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in p.items():
                setattr(self, k, torch.nn.Parameter(torch.tensor(v, dtype=td)))

        def forward(self, x):
            h = F.conv2d(x, W_STD / np.sqrt(3 * K * K) * self.w0, B_STD * self.b0, padding=1).relu()
            h = F.conv2d(h, W_STD / np.sqrt(c * K * K) * self.w2, B_STD * self.b2, padding=1).relu()
            h = h.mean(dim=(2, 3)) if readout == "gap" else h.flatten(1)
            return F.linear(h, W_STD / np.sqrt(feat) * self.wr, B_STD * self.br)

    model = Net()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.tensor(x_nhwc, dtype=td).permute(0, 3, 1, 2).contiguous()

    def jac():
        with torch.no_grad():
            j = vmap(jacrev(lambda q, xi: functional_call(model, q, (xi.unsqueeze(0),)).squeeze(0)), (None, 0))(params, x)
            return sum(torch.einsum("naf,maf->nm", v.flatten(2), v.flatten(2)) for v in j.values())

    def vps():
        with torch.no_grad():
            out, vjp_fn = vjp(lambda q: functional_call(model, q, (x,)), params)
            basis = torch.eye(out.numel(), dtype=out.dtype).view(out.numel(), *out.shape)

            def col(e):
                (ct,) = vjp_fn(e)
                return jvp(lambda q: functional_call(model, q, (x,)), (params,), (ct,))[1].reshape(-1)

            return vmap(col)(basis)

    if fn_only:
        return lambda: jac().double().numpy()
    res = {}
    # The NTK-vector products vmap over N basis vectors with every activation alive: at N = 256 that exceeds
    # this machine's 24 GB and the process is killed (not an exception), so they run only for small N.
    cands = [("torch.func jacrev+einsum", jac)] + ([("torch.func vjp/jvp", vps)] if x.shape[0] <= 128 else [])
    for name, fn in cands:
        try:
            k, t = timed(fn, repeats)
            res[name] = (k.double().numpy(), t)
        except Exception as e:
            print(f"# {name}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
    return res


def nt_ntk(p, c, readout, x_nhwc, dtype, repeats, structured_only=False):
    import jax
    if dtype == "f64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    jd = jnp.float64 if dtype == "f64" else jnp.float32
    conv = lambda: stax.Conv(c, (K, K), padding="SAME", W_std=W_STD, b_std=B_STD, parameterization="ntk")
    _, apply_fn, _ = stax.serial(conv(), stax.Relu(), conv(), stax.Relu(),
                                 stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(),
                                 stax.Dense(1, W_std=W_STD, b_std=B_STD, parameterization="ntk"))
    hwio = lambda w: jnp.asarray(np.transpose(w, (2, 3, 1, 0)), dtype=jd)
    wr = p["wr"]
    if readout == "flatten":  # our rows are NCHW-flattened; stax flattens NHWC
        s = int(round(np.sqrt(wr.shape[1] // c)))
        wr = wr.reshape(1, c, s, s).transpose(0, 2, 3, 1).reshape(1, -1)
    params = [(hwio(p["w0"]), jnp.asarray(p["b0"].reshape(1, 1, 1, -1), dtype=jd)), (),
              (hwio(p["w2"]), jnp.asarray(p["b2"].reshape(1, 1, 1, -1), dtype=jd)), (), (),
              (jnp.asarray(wr.T, dtype=jd), jnp.asarray(p["br"], dtype=jd))]
    x = jnp.asarray(x_nhwc, dtype=jd)
    res = {}
    for impl in nt.NtkImplementation:
        if impl.name == "AUTO" or (structured_only and impl.name != "STRUCTURED_DERIVATIVES"):
            continue
        name = f"neural-tangents {impl.name}"
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=impl))
        try:
            k, t = timed(lambda: fn(x, None, params), repeats, sync=jax.block_until_ready)
            res[name] = (np.asarray(k, dtype=np.float64), t)
        except Exception as e:
            print(f"# {name}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--readout", choices=["gap", "flatten"], default="gap")
    ap.add_argument("--dtype", choices=["f64", "f32"], default="f64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bin", default=BIN)
    ap.add_argument("--no-nt", action="store_true", help="skip neural-tangents (its Jacobian contraction is slow)")
    ap.add_argument("--nt-structured-only", action="store_true",
                    help="of neural-tangents' implementations run only STRUCTURED_DERIVATIVES (its fastest here)")
    add_allocator_flag(ap)
    a = ap.parse_args()
    alloc = apply_allocator_flag(a)
    p, feat = draw(a.channels, a.size, a.readout, 0)
    x = np.random.default_rng(1).standard_normal((a.n, a.size, a.size, 3))
    tmp = tempfile.mkdtemp(prefix="entk-cnn-")
    xp, mp, kp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "m.safetensors"), os.path.join(tmp, "k.npy")
    np.save(xp, x)
    save_ntklab(p, a.channels, a.size, a.readout, feat, mp)
    cmd = [a.bin, "ntk", "--model", mp, "--x", xp, "--out", kp, "--force", "--precision", a.dtype]
    _, wall, compute = run_timed(cmd, a.repeats)
    ours = np.load(kp).astype(np.float64)
    results = {"ntklab (compute)": (ours, compute), "ntklab (process)": (ours, wall)}
    if os.path.exists(IN_PROCESS):
        kw = os.path.join(tmp, "kw.npy")
        r = subprocess.run([IN_PROCESS, mp, xp, kw, a.dtype, str(a.repeats)], capture_output=True, text=True, check=True)
        results["ntklab (in process, warm)"] = (np.load(kw).astype(np.float64), json.loads(r.stdout)["runs_s"])
    else:
        print(f"# {IN_PROCESS} not built: in-process timing skipped", file=sys.stderr)
    results.update(torch_ntk(p, a.channels, a.readout, feat, x, a.dtype, a.repeats))
    if not a.no_nt:
        results.update(nt_ntk(p, a.channels, a.readout, x, a.dtype, a.repeats, a.nt_structured_only))
    nparams = sum(v.size for v in p.values())
    print(f"\n## Empirical NTK, CNN conv({a.channels},3x3)x2 + {a.readout} + dense(1), N = {a.n}, "
          f"{a.size}x{a.size}x3, {nparams} parameters, {a.dtype}, median of {a.repeats}; {alloc}\n")
    print("| implementation | median (s) | runs (s) | max rel diff to ntklab |")
    print("|---|---|---|---|")
    scale = np.abs(ours).max()
    for name, (k, t) in results.items():
        diff = np.abs(k - ours).max() / scale
        print(f"| {name} | {statistics.median(t):.4f} | {' '.join(f'{v:.3f}' for v in t)} | {diff:.1e} |")
    peers = {n: statistics.median(t) for n, (_, t) in results.items() if not n.startswith("ntklab")}
    best = min(peers, key=peers.get)
    ours_t = statistics.median(compute)
    print(f"\nfastest peer: {best} {peers[best]:.4f} s; ntklab compute {ours_t:.4f} s -> ratio {peers[best] / ours_t:.2f}x "
          f"(process {statistics.median(wall):.4f} s -> {peers[best] / statistics.median(wall):.2f}x)")
    if "ntklab (in process, warm)" in results:
        warm = statistics.median(results["ntklab (in process, warm)"][1])
        print(f"in process, timed as the peers are: ntklab {warm:.4f} s -> ratio {peers[best] / warm:.2f}x")


if __name__ == "__main__":
    main()
