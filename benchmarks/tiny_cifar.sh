#!/usr/bin/env bash
# Issue 12's experiment on a CPU: search microcontroller-size nets (<= 100k parameters, <= 25M MACs)
# on the CIFAR-10 JPEG copy, with TPE and with random sampling as the control, retrain trials spread
# over the proxy ranking and the hand-designed presets alike, measure the proxy's fidelity, report.
#
#   NAS_CIFAR10_JPEG=/path/to/cifar10-jpeg nohup bash benchmarks/tiny_cifar.sh > studies/tiny.log 2>&1 &
#
# Resumable: every step keeps its results in the studies (studies/tiny-*.db) and checkpoints, so run
# it again after an interruption and it goes on where it stopped; finished steps are skipped.
# Knobs (environment): TRIALS (24 per sampler), EPOCHS (30 per retrain), SPREAD (8 TPE trials retrained),
# CONTROL (3 random-sampler trials retrained), RESCORE (proxy sizes for benchmarks/proxy_fidelity.py),
# LANES (processes side by side, default one per core, each pinned to one thread: on a shared CPU one
# thread per process beats two threads in one, see RESULTS.md, "the CPU engine").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="imagefolder:${NAS_CIFAR10_JPEG:?set NAS_CIFAR10_JPEG to the unpacked cifar10-jpeg folder}"
TRIALS=${TRIALS:-24} EPOCHS=${EPOCHS:-30} SPREAD=${SPREAD:-8} CONTROL=${CONTROL:-3}
RESCORE=${RESCORE:-0.1:3,0.2:2,0.5:5}
NAS=${NAS:-nas}
LANES=${LANES:-$(nproc)}
if [ "$LANES" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
# No pruner: every proxy curve runs to its end, so proxy_fidelity.py can judge what a pruner deciding
# at epoch k would have seen, and the default pruner is chosen from that.
SEARCH=(--space micro --budget 1e5 --max-macs 2.5e7 --dataset "$DATA" --gpus cpu
        --proxy-epochs 5 --proxy-subset 0.2 --pruner none --seed 0 --trials "$TRIALS")

step() { echo "== $(date '+%F %T') $*"; }

step "search: TPE and random sampling (the control)"
tpe=($NAS search "${SEARCH[@]}" --study tiny-tpe --record benchmarks/RESULTS.md)
random=($NAS search "${SEARCH[@]}" --study tiny-random --sampler random --record benchmarks/RESULTS.md)
if [ "$LANES" -gt 1 ]; then  # side by side, equal cost
    "${tpe[@]}" & a=$!
    "${random[@]}" & b=$!
    wait $a && wait $b
else
    "${tpe[@]}" && "${random[@]}"
fi

# Trials to retrain: SPREAD from TPE at evenly spaced proxy ranks (the best always among them),
# the best CONTROL of the random study; each skipped if its retrain is already stored.
pick() {  # study, how many, spread|top
    python3 - "$@" <<'PY'
import sys
from nas.study import load_study
from nas.retrain import retrains
study = load_study(None, sys.argv[1])
k, how = int(sys.argv[2]), sys.argv[3]
ranked = [t.number for t in sorted(study.get_trials(deepcopy=False), key=lambda t: -(t.value or 0)) if t.value is not None]
if how == "spread" and len(ranked) > k:
    ranked = [ranked[round(i * (len(ranked) - 1) / (k - 1))] for i in range(k)]
done = retrains(study)
print(" ".join(str(n) for n in ranked[:k] if f"trial-{n}" not in done))
PY
}
# The comparisons first (the preset, each sampler's best), then the rest of the spread.
jobs=()
if ! python3 -c "import sys; from nas.study import load_study; from nas.retrain import retrains
sys.exit('preset-mlperf-tiny-resnet8' not in retrains(load_study(None, 'tiny-tpe')))"; then
    jobs+=("--study tiny-tpe --preset mlperf-tiny-resnet8")
fi
tpe_trials=($(pick tiny-tpe "$SPREAD" spread)) random_trials=($(pick tiny-random "$CONTROL" top))
if [ ${#tpe_trials[@]} -gt 0 ]; then jobs+=("--study tiny-tpe --trial ${tpe_trials[0]}"); fi
if [ ${#random_trials[@]} -gt 0 ]; then jobs+=("--study tiny-random --trial ${random_trials[0]}"); fi
for n in "${tpe_trials[@]:1}"; do jobs+=("--study tiny-tpe --trial $n"); done
for n in "${random_trials[@]:1}"; do jobs+=("--study tiny-random --trial $n"); done
step "retrain ${#jobs[@]}, $LANES at a time"
printf '%s\n' "${jobs[@]}" | xargs -r -P "$LANES" -I{} sh -c \
    "echo '== retrain {}'; $NAS retrain {} --epochs $EPOCHS --resume --device cpu"

step "proxy fidelity"
python3 benchmarks/proxy_fidelity.py --study tiny-tpe --rescore "$RESCORE" --record benchmarks/RESULTS.md
step "reports"
$NAS report --study tiny-tpe
$NAS report --study tiny-random
