#!/usr/bin/env bash
# Regenerates crates/ntklab-cli/tests/fixtures/mlp_v0 with the ntklab binary given as $1, which was the MLP-only
# implementation (commit cc65eac, before the graph engine). The fixtures pin "today's MLP results": the test
# `graph_engine_reproduces_the_mlp_implementation` checks the current code against them to 1e-12.
# Usage: tools/make_mlp_v0_fixtures.sh /path/to/old/ntklab
set -euo pipefail
BIN="$1"
F="$(cd "$(dirname "$0")/.." && pwd)/crates/ntklab-cli/tests/fixtures/mlp_v0"
ARCH="dense(16,w_std=1.3,b_std=0.1),tanh,dense(8),relu,dense(2,b_std=0.2)"
rm -f "$F"/model.safetensors "$F"/ntk_full.npy "$F"/hessian.json "$F"/trained.safetensors "$F"/records.jsonl
"$BIN" init --arch "$ARCH" --input-dim 3 --parameterization mup --alpha 1.3 --seed 5 --out "$F/model.safetensors"
"$BIN" ntk --model "$F/model.safetensors" --x "$F/x.npy" --full --out "$F/ntk_full.npy"
"$BIN" hessian --model "$F/model.safetensors" --x "$F/x.npy" --y "$F/y.npy" --top 3 --json "$F/hessian.json"
T="$(mktemp -d)"
"$BIN" train --config "$F/train.toml" --out "$T/run"
cp "$T/run/model.safetensors" "$F/trained.safetensors"
cp "$T/run/records.jsonl" "$F/records.jsonl"
rm -rf "$T"
