#!/usr/bin/env bash
# Issue 18's ground truth and its control, a sibling of tiny_cifar.sh: 30-epoch retrains (ResNet-8's
# recipe) of micro-arch nets that are hard to rank by size, so that every candidate score can be set
# against enough retrains to decide, and ResNet-8 scaled to the budget as the control.
#
#   NAS_CIFAR10_JPEG=/tmp/c10/cifar10-jpeg nohup nice bash benchmarks/tiny_band.sh > /tmp/band.log 2>&1 &
#
# 1. retrain the nets of both searches within 80-100% of the budget not retrained yet (TPE 9, the
#    preact twin of TPE 20, first);
# 2. search tiny-arch-band: micro-arch with --fill-budget and random sampling, so every net is within
#    90-100% of the budget (or as much as the MAC limit allows) and of a shape of its own; the same proxy as the two searches (5 epochs on
#    0.2 of the split, no pruner), so proxy_fidelity.py pools the three;
# 3. retrain ResNet-8 scaled to the budget (preset-mlperf-tiny-resnet8-fit, seeds 0 and 1), a second
#    seed of TPE 17, and BAND of tiny-arch-band's trials within 80-100% of the budget, spread over their proxy
#    ranking; then a second seed of the best of those;
# 4. proxy_fidelity.py over the three studies: every candidate score, with intervals (RESULTS.md);
# 5. with RERUN_SCORE set (the score the table chose, a `nas search --score` value): TPE again at the
#    same limits with --fill-budget and that score (tiny-arch-tpe-fill-<score>), and its best retrained
#    with seeds 0 and 1, against ResNet-8 scaled to the budget (step 3).
# Runs in sittings like tiny_cifar.sh: every retrain is stored on its study (journals under STATE) and
# checkpointed every 5 epochs; a rerun skips what is stored and resumes what was cut. End a sitting
# with `bash benchmarks/tiny_cifar.sh stop` (it stops these retrains too), then commit STATE.
# Knobs (environment): DATA, EPOCHS (30), LANES (one per core, one thread each), BAND (6), RECORD.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-imagefolder:${NAS_CIFAR10_JPEG:?set NAS_CIFAR10_JPEG to the unpacked cifar10-jpeg folder}}
BAND=${BAND:-6} BAND_TRIALS=${BAND_TRIALS:-12}
source benchmarks/tiny_common.sh && export DATA
TPE=tiny-arch-tpe RANDOM_=tiny-arch-random BAND_STUDY=tiny-arch-band

step "retrain the nets within 80-100% of the budget"
retrain_all <<JOBS
$TPE trial-9 --trial 9
$RANDOM_ trial-55 --trial 55
$RANDOM_ trial-51 --trial 51
$TPE trial-30 --trial 30
$TPE trial-38 --trial 38
$TPE trial-41 --trial 41
JOBS

step "search $BAND_STUDY: $BAND_TRIALS random nets filled to the budget"  # resumes; done, it trains nothing
$NAS search --space micro-arch --budget 1e5 --max-macs 2.5e7 --dataset "$DATA" --gpus cpu --proxy-epochs 5 \
    --proxy-subset 0.2 --pruner none --fill-budget --sampler random --seed 2 --trials "$BAND_TRIALS" \
    --study $BAND_STUDY --storage "$(storage $BAND_STUDY)"

step "retrain the control, a second seed of TPE 17 and $BAND of $BAND_STUDY"
{
    echo "$TPE preset-mlperf-tiny-resnet8-fit --preset mlperf-tiny-resnet8 --fit-budget"
    echo "$TPE trial-17-seed1 --trial 17 --seed 1"
    python3 - "$STATE" "$BAND_STUDY" "$BAND" <<'PY'
import sys
from nas.study import counts, load_study
state, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
study = load_study(f"journal:{state}/{name}.journal", name)
band = 0.8 * study.user_attrs["budget"]  # the nets a score must tell apart; the MAC limit keeps some wide ones smaller
order = [t.number for t in sorted(study.get_trials(deepcopy=False), key=lambda t: -(t.value or 0))
         if t.value is not None and counts(t) and t.user_attrs["params"] >= band]
if len(order) > k:  # spread over the proxy ranking, the best first
    order = [order[round(i * (len(order) - 1) / (k - 1))] for i in range(k)]
for n in order[:k]:
    print(name, f"trial-{n}", f"--trial {n}")
PY
    echo "$TPE preset-mlperf-tiny-resnet8-fit-seed1 --preset mlperf-tiny-resnet8 --fit-budget --seed 1"
} | retrain_all

step "a second seed of the best net of $BAND_STUDY"  # the best new net: the seed spread beside the ranks
python3 - "$STATE" "$BAND_STUDY" <<'PY' | retrain_all
import sys
from nas.retrain import base_name, retrains
from nas.study import load_study
state, name = sys.argv[1:]
done = {k: r for k, r in retrains(load_study(f"journal:{state}/{name}.journal", name)).items() if base_name(k) == k}
best = max(done, key=lambda k: done[k]["retrain_test_acc"])
print(name, f"{best}-seed1", f"--trial {best.removeprefix('trial-')} --seed 1")
PY

step "every candidate score against the retrains of the three studies"
python3 benchmarks/proxy_fidelity.py --study $TPE --storage "$(storage $TPE)" --study $RANDOM_ \
    --storage "$(storage $RANDOM_)" --study $BAND_STUDY --storage "$(storage $BAND_STUDY)" \
    --rescore 0.2:5,0.2:5:constant --zero-cost --lanes "$LANES" --cache "$STATE/proxy-fidelity.json" --record "$RECORD"
if [ -z "${RERUN_SCORE:-}" ]; then
    step "done; the re-run search waits for the table's verdict: RERUN_SCORE=<score> bash $0"
    exit 0
fi
RERUN=tiny-arch-tpe-fill-$RERUN_SCORE
if [ "$(trained "$RERUN")" -ge 24 ]; then  # a rerun would --record an empty search
    step "search $RERUN: it holds 24 trained trials already"
else
    step "search $RERUN: TPE with --fill-budget, scored by $RERUN_SCORE"
    $NAS search --space micro-arch --budget 1e5 --max-macs 2.5e7 --dataset "$DATA" --gpus cpu --proxy-epochs 5 \
        --proxy-subset 0.2 --pruner none --fill-budget --score "$RERUN_SCORE" --seed 0 --trials 24 --jobs-per-gpu "$LANES" \
        --study "$RERUN" --storage "$(storage "$RERUN")" --record "$RECORD"
fi
best=$(python3 -c "import sys; from nas.retrain import best_trials; from nas.study import load_study
print(best_trials(load_study(sys.argv[1], sys.argv[2]), 1)[0])" "$(storage "$RERUN")" "$RERUN")
step "retrain $RERUN's best, trial $best, with two seeds"
printf '%s\n' "$RERUN trial-$best --trial $best" "$RERUN trial-$best-seed1 --trial $best --seed 1" | retrain_all
$NAS report --study "$RERUN" --storage "$(storage "$RERUN")" --out "$STATE/$RERUN/report"
step "done"
