# What tiny_cifar.sh and tiny_band.sh share, sourced by both after `cd` to the repository root:
# where the state lives, how a study's storage is named, the lanes, and one resumable retrain.
STATE=${STATE:-benchmarks/tiny_cifar} RECORD=${RECORD:-benchmarks/RESULTS.md} NAS=${NAS:-nas}
EPOCHS=${EPOCHS:-30}
LANES=${LANES:-$(env -u OMP_NUM_THREADS nproc)}  # nproc alone counts OMP_NUM_THREADS, not cores
if [ "$LANES" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
step() { echo "== $(date '+%F %T') $*"; }
storage() { echo "journal:$STATE/$1.journal"; }

trained() {  # trials a study has trained (0 before it exists)
    python3 -c "import sys; from nas.study import counts, load_study
try: print(sum(map(counts, load_study(sys.argv[1], sys.argv[2]).get_trials(deepcopy=False))))
except Exception: print(0)" "$(storage "$1")" "$1"
}
retrain_one() {  # study, the retrain's name (its folder under STATE/study), retrain flags
    step "retrain $1 $2"
    $NAS retrain --study "$1" --storage "$(storage "$1")" "${@:3}" --out "$STATE/$1/$2" --dataset "$DATA" \
        --epochs "$EPOCHS" --resume --device cpu
}
retrain_all() {  # one job per line on stdin (study, name, retrain flags), LANES at a time
    xargs -r -P "$LANES" -L1 bash -c 'retrain_one "$@"' _
}
export -f step storage retrain_one
export NAS STATE EPOCHS
