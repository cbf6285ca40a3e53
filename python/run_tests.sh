#!/usr/bin/env bash
# The Python package's tests: builds and installs ./python (pip + maturin, an abi3 wheel) into a venv under
# target/, then runs pytest on python/tests. Called by the README's test command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NTKLAB_PY_VENV:-$ROOT/target/pyvenv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" -m pip install -q "$ROOT/python[test]"
# From the repository root: python/ntklab (without the compiled module) must not shadow the installed package.
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q python/tests
