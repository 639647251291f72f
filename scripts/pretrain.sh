#!/usr/bin/env bash
# Build the bundled base model (src/rlft/assets/base-model) in the background with the recipe
# recipes/pretrain (`python -m recipes.pretrain`); about 76 minutes on 2 CPU cores. Extra arguments
# are its settings (key=value; `python -m recipes.pretrain --help` lists them).
#   scripts/pretrain.sh                      # the bundled model
#   scripts/pretrain.sh pretrain_minutes=5   # a quicker, weaker one
# OMP_WAIT_POLICY=PASSIVE: on a machine shared with other jobs, spinning OpenMP workers made
# 2 threads twice as slow as 1; passive waiting removes that penalty.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
LOG="${LOG:-runs/pretrain.log}"
OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=true nohup python -m recipes.pretrain "$@" > "$LOG" 2>&1 &
echo "python -m recipes.pretrain running as pid $!; log: $LOG"
