#!/usr/bin/env bash
# The first GPU run, in four parts that each fit one call of a lent GPU machine (~2-5 minutes each on
# one H100, estimated from FLOPs: no GPU has run it yet, so its targets are unmeasured): every
# GPU-specific path of nas (8 optimizers in bf16 and fp16, a 2-worker search with an induced
# out-of-memory trial, checkpoint/resume, compile) and issue 9's targets. Each row is appended to the
# record as soon as it is measured. See benchmarks/gpu_check.py for the parts and their checks.
#
#   NAS_CIFAR10_JPEG=/path/to/cifar10-jpeg benchmarks/gpu_check.sh --only paths --record FILE
#   ... --only speed | --only accuracy | --only search   # the other parts; --only decode,oom: single checks
#   benchmarks/gpu_check.sh --smoke            # CPU, tiny generated data: checks the script itself
#
# With the lab's device tool (carry [".device"], after bash ../shared/tools/device-prep.sh here):
#   source .device/setup.sh && bash benchmarks/gpu_check.sh --only paths --record $OUT/gpu-paths.md
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
