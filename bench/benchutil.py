"""Shared by the benchmark scripts: run an ntklab command repeatedly and collect its timings."""
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
