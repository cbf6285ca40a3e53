"""Shared by the benchmark scripts: run an ntklab command repeatedly and collect its timings."""
import ctypes
import re
import subprocess
import time

# The `compute: X s` line ntklab prints on stderr (the work without file I/O).
COMPUTE_RE = re.compile(r"compute\s*[:=]\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(ms|s)?", re.I)


def run_timed(cmd, repeats):
    """Run `cmd` once as a warm-up (page cache, CPU clocks), then `repeats` timed times.
    Returns (last CompletedProcess, wall times in s, compute times in s from the `compute:` line)."""
    wall, compute, r = [], [], None
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"ntklab failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
        if i == 0:
            continue
        wall.append(dt)
        m = COMPUTE_RE.search(r.stderr) or COMPUTE_RE.search(r.stdout)
        if m:
            v = float(m.group(1))
            compute.append(v / 1000.0 if (m.group(2) or "s").lower() == "ms" else v)
    return r, wall, compute


def keep_freed_memory():
    """Gives this process glibc's allocator settings that ntklab's CLI and harnesses set for themselves
    (`ntklab::data::memory::keep_freed_memory`): freed memory stays in the process instead of going back to the
    kernel, so repeated calls do not pay first-touch page faults again. Called before the peer runs, so that both
    sides of a ratio run with the same allocator. Returns False where it cannot be set (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's <malloc.h>
    return all(mallopt(k, v) == 1 for k, v in
               ((m_mmap_threshold, 1 << 30), (m_trim_threshold, 256 << 20), (m_top_pad, 64 << 20)))


def add_allocator_flag(parser):
    parser.add_argument("--peer-allocator", choices=["same", "default"], default="same",
                        help="same: the Python peers run with ntklab's allocator settings (keep_freed_memory), as a "
                             "ratio should; default: glibc's defaults, as torch ships")


def apply_allocator_flag(args):
    """Applies --peer-allocator; returns the line to print with the results."""
    if args.peer_allocator == "same":
        ok = keep_freed_memory()
        return "peers run with ntklab's allocator settings" if ok else "peers: allocator settings could not be set"
    return "peers run with glibc's default allocator settings"
