#!/usr/bin/env bash
# Fresh-machine set-up: a virtual environment in .venv with rlft and its test extras.
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
