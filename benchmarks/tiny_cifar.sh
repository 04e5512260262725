#!/usr/bin/env bash
# Issue 12's experiment on a CPU: search microcontroller-size nets (<= 100k parameters, <= 25M MACs)
# on the CIFAR-10 JPEG copy, with TPE and with random sampling as the control, retrain trials spread
# over the proxy ranking and the hand-designed preset alike, measure the proxy's fidelity, report.
# The space is micro-arch: the architectures of `micro`, all trained with ResNet-8's recipe (why: its
# description, and RESULTS.md).
#
#   NAS_CIFAR10_JPEG=/path/to/cifar10-jpeg nohup bash benchmarks/tiny_cifar.sh > studies/tiny.log 2>&1 &
#
# Resumable across machines: the studies are journal files and the retrains write their folders under
# STATE (benchmarks/tiny_cifar/, where git keeps the journals, each retrain's history.csv and the
# checkpoint of a retrain cut short), so commit STATE when a sitting ends, and the next sitting, on
# any machine, runs this again and goes on where it stopped; finished steps are skipped.
# To end a sitting without losing work: `bash benchmarks/tiny_cifar.sh stop` starts no new step and
# stops each running retrain just after its next checkpoint (every 5 epochs); then commit STATE.
# Knobs (environment): DATA (a --dataset, for a smoke run), RECORD (where results are appended), TRIALS (24 per sampler), EPOCHS (30 per retrain), SPREAD (8 TPE trials retrained),
# CONTROL (the random sampler's 2 best by proxy retrained), RESCORE (proxy sizes for benchmarks/proxy_fidelity.py),
# LANES (processes side by side, default one per core, each pinned to one thread: on a shared CPU one
# thread per process beats two threads in one, see RESULTS.md, "the CPU engine").
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/tiny_common.sh

if [ "${1:-}" = stop ]; then  # SIGTERM, not SIGINT: a job started with & (nohup) ignores SIGINT
    pkill -f 'tiny_(cifar|band)\.sh$' || true  # the running experiments (not this: its arguments end in stop)
    pkill -f "xargs .*retrain_one" || true  # no next retrain; the running ones go on to their checkpoint
    pkill -TERM -f "nas search .*journal:$STATE/" || true  # a search stops its trials (they count as interrupted)
    stamp() { stat -c %Y "$1" 2>/dev/null || echo none; }
    for p in $(pgrep -f "nas retrain .*--out $STATE/"); do  # this experiment's retrains, no other
        ckpt="$(tr '\0' '\n' < "/proc/$p/cmdline" | grep -A1 -x -- --out | tail -1)/checkpoint.pt"
        (   before=$(stamp "$ckpt")
            while kill -0 "$p" 2>/dev/null && [ "$(stamp "$ckpt")" = "$before" ]; do sleep 5; done
            if kill -0 "$p" 2>/dev/null && python3 -c "import sys; from nas.train import checkpoint_progress
done, total = checkpoint_progress(sys.argv[1]); sys.exit(done == total)" "$ckpt"; then
                kill -TERM "$p" 2>/dev/null && step "stopped the retrain after its checkpoint $ckpt"
            else  # its last epoch was that checkpoint: it is testing and storing, let it finish
                while kill -0 "$p" 2>/dev/null; do sleep 5; done
            fi
        ) &
    done
    wait
    exit 0
fi
DATA=${DATA:-imagefolder:${NAS_CIFAR10_JPEG:?set NAS_CIFAR10_JPEG to the unpacked cifar10-jpeg folder}}
TRIALS=${TRIALS:-24} SPREAD=${SPREAD:-8} CONTROL=${CONTROL:-2}
RESCORE=${RESCORE:-0.1:3,0.2:2,0.5:5}
mkdir -p "$STATE"
TPE=tiny-arch-tpe RANDOM_=tiny-arch-random
# No pruner: every proxy curve runs to its end, so proxy_fidelity.py can judge what a pruner deciding
# at epoch k would have seen. Different seeds: TPE starts with random proposals, and the control
# should not repeat them.
SEARCH=(--space micro-arch --budget 1e5 --max-macs 2.5e7 --dataset "$DATA" --gpus cpu
        --proxy-epochs 5 --proxy-subset 0.2 --pruner none --trials "$TRIALS")

search_both() {
    local tpe=($NAS search "${SEARCH[@]}" --study $TPE --storage "$(storage $TPE)" --seed 0 --record "$RECORD")
    local random=($NAS search "${SEARCH[@]}" --study $RANDOM_ --storage "$(storage $RANDOM_)" --sampler random
                  --seed 1 --record "$RECORD")
    if [ "$LANES" -gt 1 ]; then  # side by side, equal cost
        "${tpe[@]}" & local a=$!
        "${random[@]}" & local b=$!
        local failed=0; wait $a || failed=$?; wait $b || failed=$?  # both finish; either failing stops here
        return "$failed"
    fi
    "${tpe[@]}" && "${random[@]}"
}
if [ "$(trained $TPE)" -ge "$TRIALS" ] && [ "$(trained $RANDOM_)" -ge "$TRIALS" ]; then
    step "search: both studies hold $TRIALS trained trials already"  # a rerun would --record an empty search
else
    step "search: TPE and random sampling (the control)"
    search_both
fi

# What to retrain, each skipped if its retrain is already stored: the preset, then SPREAD trials of
# TPE at evenly spaced proxy ranks (the best first) and the best CONTROL of the random study, each
# sampler's best ahead of the rest. One line per job: study, name, retrain flags.
jobs() {
    python3 - "$STATE" "$TPE" "$RANDOM_" "$SPREAD" "$CONTROL" <<'PY'
import sys
from nas.study import counts, load_study
from nas.retrain import retrains
state, tpe, rnd, spread, control = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def ranked(name, k, how):
    study = load_study(f"journal:{state}/{name}.journal", name)
    done = retrains(study)
    order = [t.number for t in sorted(study.get_trials(deepcopy=False), key=lambda t: -(t.value or 0))
             if t.value is not None and counts(t)]  # trained trials: no repeat of one
    if how == "spread" and len(order) > k:
        order = [order[round(i * (len(order) - 1) / (k - 1))] for i in range(k)]
    return [(name, f"trial-{n}", f"--trial {n}") for n in order[:k] if f"trial-{n}" not in done], done
t, done = ranked(tpe, spread, "spread")
r, _ = ranked(rnd, control, "top")
preset = [] if "preset-mlperf-tiny-resnet8" in done else [(tpe, "preset-mlperf-tiny-resnet8", "--preset mlperf-tiny-resnet8")]
for job in preset + t[:1] + r[:1] + t[1:] + r[1:]:
    print(*job)
PY
}
list=$(jobs)
step "retrain $(echo -n "$list" | grep -c . || true), $LANES at a time"
export DATA
echo -n "$list" | retrain_all

step "proxy fidelity, over the retrained trials of both searches (one space, one proxy)"
python3 benchmarks/proxy_fidelity.py --study $TPE --storage "$(storage $TPE)" --study $RANDOM_ \
    --storage "$(storage $RANDOM_)" --rescore "$RESCORE" --lanes "$LANES" --cache "$STATE/proxy-fidelity.json" --record "$RECORD"
step "reports"
$NAS report --study $TPE --storage "$(storage $TPE)" --out "$STATE/$TPE/report"
$NAS report --study $RANDOM_ --storage "$(storage $RANDOM_)" --out "$STATE/$RANDOM_/report"
