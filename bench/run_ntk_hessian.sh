#!/usr/bin/env bash
# Runs the finite-network empirical-NTK / Hessian benchmark (ntklab vs neural-tangents vs
# torch.func) and prints markdown tables. Extra args go to ntk_hessian_bench.py (--quick, --dtype f64).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
[ -x "$HERE/.venv/bin/python" ] || bash "$HERE/setup.sh"
if [ -z "${NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p ntklab-cli >&2)
fi
exec "$HERE/.venv/bin/python" "$HERE/ntk_hessian_bench.py" "$@"
