#!/usr/bin/env bash
# Runs the whole infinite-width kernel benchmark (ntklab vs neural-tangents) and prints a
# markdown table. Extra args go to kernel_bench.py (e.g. --quick, --repeats 5).
#   bash bench/run_kernel.sh            # N=4000, d=784, f32 + f64
#   bash bench/run_kernel.sh --quick    # N=500 smoke run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
[ -x "$HERE/.venv/bin/python" ] || bash "$HERE/setup.sh"
if [ -z "${NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p ntklab-cli >&2)
fi
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
exec "$HERE/.venv/bin/python" "$HERE/kernel_bench.py" "$@"
