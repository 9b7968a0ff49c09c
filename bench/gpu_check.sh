#!/usr/bin/env bash
# Check the device path on a machine with a GPU: the embedded policy and the HF VLA adapter
# sample and score in bfloat16 on cuda with log-probs matching CPU float32 ones, and train one
# grape-train iteration there (bench/gpu_check.py says what and with which tolerance).
# Exits 0 with a message on a machine without a GPU; 1 when a check fails.
#
#   bench/gpu_check.sh                 check cuda
#   bench/gpu_check.sh --device cpu    the same checks in bfloat16 on the CPU (tests the script)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; activate the project's environment first" >&2
    exit 1
fi
exec "$PYTHON" bench/gpu_check.py "$@"
