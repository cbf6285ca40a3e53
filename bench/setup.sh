#!/usr/bin/env bash
# Creates bench/.venv with the peer libraries used by the benchmarks.
# Usage: bash bench/setup.sh   (from anywhere)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install --upgrade pip wheel
"$VPY" -m pip install "jax==0.4.23" "jaxlib==0.4.23" neural-tangents "numpy<2" "scipy<1.13" safetensors
# CPU torch. PyPI's Linux x86_64 torch wheel bundles CUDA libs (large but works on CPU);
# fall back to the CPU-only index only if PyPI install is impossible.
if ! "$VPY" -m pip install torch; then
  "$VPY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
"$VPY" - <<'PY'
import jax, jaxlib, numpy, neural_tangents, torch, safetensors
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "numpy", numpy.__version__,
      "neural_tangents", neural_tangents.__version__, "torch", torch.__version__,
      "safetensors", safetensors.__version__)
PY
