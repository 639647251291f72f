#!/usr/bin/env bash
# Build the bundled base model (src/rlft/assets/base-model) in the background; about 76 minutes
# on 2 CPU cores. Extra arguments are `rlft pretrain` overrides (key=value).
#   scripts/pretrain.sh                      # the bundled model
#   scripts/pretrain.sh pretrain_minutes=5   # a quicker, weaker one
# OMP_WAIT_POLICY=PASSIVE: on a machine shared with other jobs, spinning OpenMP workers made
# 2 threads twice as slow as 1; passive waiting removes that penalty.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
LOG="${LOG:-runs/pretrain.log}"
OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=true nohup rlft pretrain "$@" > "$LOG" 2>&1 &
echo "rlft pretrain running as pid $!; log: $LOG"
