#!/usr/bin/env bash
# The device check for a GPU machine (issue 23): the default DAG on CUDA in a fresh clone of HEAD, its
# metrics judged against the committed CPU run by their measured spread, per-stage times against the
# 8-minute target, and embed_images against a bare forward. Exit 1 when a metric moved beyond its spread.
# Usage (from the repository root, in the project's venv): bench/device.sh [--device cuda:0] [--stages ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python bench/device.py "$@"
