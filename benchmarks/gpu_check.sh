#!/usr/bin/env bash
# The GPU check: bash benchmarks/gpu_check.sh   (on a CUDA machine; writes benchmarks/gpu_check.md)
#                bash benchmarks/gpu_check.sh --cpu   (part (b) tiny on the CPU, to check the code path)
# Needs nothing from the internet (random-init ViT-B/32, fabricated data). PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1
if [[ "${1:-}" != "--cpu" ]]; then
  if ! command -v nvidia-smi > /dev/null || ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA device here (nvidia-smi or torch.cuda unavailable): run it on a CUDA machine," \
         "or 'bash benchmarks/gpu_check.sh --cpu' for the CPU dry run of part (b)" >&2
    exit 2
  fi
fi
exec timeout 900 "$PY" benchmarks/gpu_check.py "$@"
