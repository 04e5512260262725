#!/usr/bin/env bash
# The first GPU run in one command: exercises every GPU-specific path of nas (8 optimizers in bf16 and
# fp16, a 2-worker search with an induced out-of-memory trial, checkpoint/resume, compile) and measures
# issue 9's targets, appending a dated section with the device to benchmarks/RESULTS.md.
# Under 10 minutes on one H100. See benchmarks/gpu_check.py for the list of checks.
#
#   NAS_CIFAR10_JPEG=/path/to/cifar10-jpeg benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --smoke            # CPU, tiny generated data: checks the script itself
#   benchmarks/gpu_check.sh --only speed,oom   # a few checks
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
