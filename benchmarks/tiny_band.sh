#!/usr/bin/env bash
# Issue 18's ground truth, a sibling of tiny_cifar.sh: retrain nets of the micro-arch space that are
# hard to rank by size (most within 80-100% of the 100k budget, of different shapes), 30 epochs of
# ResNet-8's recipe each, so that every candidate score can be set against enough retrains to decide.
#
#   NAS_CIFAR10_JPEG=/tmp/c10/cifar10-jpeg nohup nice bash benchmarks/tiny_band.sh > /tmp/band.log 2>&1 &
#
# Runs in sittings like tiny_cifar.sh: every retrain is stored on its study (journal under STATE) and
# checkpointed every 5 epochs; a rerun skips what is stored and resumes what was cut. End a sitting
# with `bash benchmarks/tiny_cifar.sh stop` (it stops this script's retrains too), then commit STATE.
# Knobs (environment): DATA, EPOCHS (30), LANES (one per core, one thread each), JOBS (the list below).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE:-benchmarks/tiny_cifar}
DATA=${DATA:-imagefolder:${NAS_CIFAR10_JPEG:?set NAS_CIFAR10_JPEG to the unpacked cifar10-jpeg folder}}
EPOCHS=${EPOCHS:-30} NAS=${NAS:-nas}
LANES=${LANES:-$(env -u OMP_NUM_THREADS nproc)}  # nproc alone counts OMP_NUM_THREADS, not cores
if [ "$LANES" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
step() { echo "== $(date '+%F %T') $*"; }

# One retrain per line: study, then retrain flags. The nets of both searches within 80-100% of the
# budget that were not retrained yet, TPE 9 (the preact twin of TPE 20) first.
JOBS=${JOBS:-"tiny-arch-tpe --trial 9
tiny-arch-random --trial 55
tiny-arch-random --trial 51
tiny-arch-tpe --trial 30
tiny-arch-tpe --trial 38
tiny-arch-tpe --trial 41"}

retrain_one() {  # study, retrain flags; the output folder is named as the study names the retrain
    local study=$1; shift
    local name; name=$(echo "$*" | sed -E 's/--trial /trial-/; s/--preset /preset-/; s/ --seed /-seed/; s/ //g')
    echo "== $(date '+%F %T') retrain $study $name"
    $NAS retrain --study "$study" --storage "journal:$STATE/$study.journal" "$@" --out "$STATE/$study/$name" \
        --dataset "$DATA" --epochs "$EPOCHS" --resume --device cpu
}
export -f retrain_one && export NAS STATE DATA EPOCHS
step "retrain $(echo "$JOBS" | grep -c .), $LANES at a time"
echo "$JOBS" | xargs -r -P "$LANES" -L1 bash -c 'retrain_one "$@"' _
step "done"
