#!/usr/bin/env bash
# One-command GPU verification: builds (--build), tests, times and runs dgm_ext on CUDA and
# writes one report; without a GPU it runs its CPU part. Options and the device-tool call:
# tools/gpu_check.py (python3 tools/gpu_check.py --help). $PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" tools/gpu_check.py "$@"
