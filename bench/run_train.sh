#!/usr/bin/env bash
# Runs the full-batch GD benchmark (ntklab train vs a PyTorch loop, f64 and f32) and prints a markdown table.
# Extra args go to train_bench.py (--repeats, --steps, --precisions f64).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
[ -x "$HERE/.venv/bin/python" ] || bash "$HERE/setup.sh"
if [ -z "${NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p ntklab-cli >&2)
fi
exec "$HERE/.venv/bin/python" "$HERE/train_bench.py" "$@"
