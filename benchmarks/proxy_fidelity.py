"""How well does a proxy training rank architectures, per CPU-second? (issue 12, item 3)

Ground truth: the retrain test accuracies a study holds (`nas retrain`, all of one length). Against
it, Kendall tau and Spearman of:
  - the study's own proxy curves, epoch by epoch: what a pruner deciding at epoch k sees (Hyperband
    with min resource k, or a median rule after k warm-up epochs), and what stopping there would cost;
  - re-scored proxies of other sizes (`--rescore 0.1:3,0.5:5`: training-split fraction : epochs),
    each configuration trained again with its own recipe compressed to that length, on the study's
    own validation split;
  - the baselines to beat: parameter count alone, MACs alone.
Re-scores are cached in studies/<study>/proxy-fidelity.json (or --cache), so the script resumes
where it stopped. Several studies of one proxy (the same data, split and proxy size: a TPE search
and its random-sampling control) pool their retrained trials for the correlations; each study's
curves are replayed through the pruners on their own.

Pruners are judged without training anything: the study's full curves (searched with --pruner none)
are replayed in trial order through each pruner, and what it would have stopped is compared with
what the unpruned search found: epochs saved, whether the best trials survive, and how the pruned
search's ranking agrees with the full proxy's (over every trained trial) and with the retrains.

    python benchmarks/proxy_fidelity.py --study tiny-tpe [--rescore 0.1:3,0.2:5,0.5:5 --lanes 2] [--record benchmarks/RESULTS.md]
    python benchmarks/proxy_fidelity.py --study a --storage journal:a.journal --study b --storage journal:b.journal
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.study import make_pruner


def rank_corr(x: list[float], y: list[float]) -> tuple[float, float]:
    pair = pd.DataFrame({"x": x, "y": y}).astype(float)
    return float(pair.corr(method="kendall").iloc[0, 1]), float(pair.corr(method="spearman").iloc[0, 1])


def retrained_trials(study) -> tuple[list, int]:
    """(trials with a retrain, the retrain length); refuses retrains of different lengths, whose
    accuracies would not compare."""
    from nas.retrain import retrains

    done = {int(k.split("-")[1]): v for k, v in retrains(study).items() if k.startswith("trial-")}
    lengths = {v["retrain_epochs"] for v in done.values()}
    if len(lengths) > 1:
        sys.exit(f"retrains of different lengths ({sorted(lengths)} epochs) do not compare; retrain them alike.")
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in done]
    for t in trials:
        t.retrain_acc, t.study = done[t.number]["retrain_test_acc"], study
    return trials, lengths.pop() if lengths else 0


def curve_rows(trials: list) -> list[dict]:
    """One row per proxy epoch k: rank correlation of the validation accuracy at epoch k with the
    retrain accuracy, over the trials whose curve reaches k, and the mean proxy seconds up to k."""
    rows = []
    longest = max((len(t.intermediate_values) for t in trials), default=0)
    for k in range(1, longest + 1):
        reached = [t for t in trials if k in t.intermediate_values]
        if len(reached) < 3:
            break
        tau, rho = rank_corr([t.intermediate_values[k] for t in reached], [t.retrain_acc for t in reached])
        seconds = [sum(t.user_attrs.get("epoch_seconds", [])[:k]) for t in reached]
        rows.append({"proxy": f"study curve, epoch {k}", "trials": len(reached), "kendall": tau, "spearman": rho,
                     "seconds": sum(seconds) / len(seconds)})  # fmt: skip
    return rows


def baseline_rows(trials: list) -> list[dict]:
    acc = [t.retrain_acc for t in trials]
    return [{"proxy": f"{key} only (no training)", "trials": len(trials),
             **dict(zip(("kendall", "spearman"), rank_corr([t.user_attrs[key] for t in trials], acc))), "seconds": 0.0}
            for key in ("params", "macs")]  # fmt: skip


def rescore(trials: list, variants: list[tuple[float, int]], cache: Path, device: str, lanes: int = 1) -> list[dict]:
    """Train each configuration again as a proxy of each size, `lanes` trainings side by side (each in
    its own process with its share of the cores); results cached per (variant, study/trial) as they
    come, so a stopped run loses at most the trainings in flight."""
    from nas.retrain import trial_target

    done = json.loads(cache.read_text()) if cache.exists() else {}
    attrs = trials[0].study.user_attrs  # one proxy: main() checked that the studies agree
    split = (attrs["dataset"], attrs["split"]["val_size"], attrs["split"]["seed"])
    jobs = {}  # (variant key, trial name): what proxy_score trains
    for subset, epochs in variants:
        for t in trials:
            if name(t) not in done.get(variant_key(subset, epochs), {}):
                target = trial_target(t.study, t.number, dataset(attrs["dataset"]).shape)
                jobs[variant_key(subset, epochs), name(t)] = (*split, subset, target.spec,
                                                               target.recipe.compressed(epochs), device)  # fmt: skip
    for (key, trial), result in _run(jobs, lanes):
        done.setdefault(key, {})[trial] = result
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done, indent=1))
        print(f"  {key} {trial}: val {result['val_acc']:.4f} in {result['seconds']:.0f} s", flush=True)
    rows = []
    for subset, epochs in variants:
        got = done.get(variant_key(subset, epochs), {})
        scored = [t for t in trials if name(t) in got]
        tau, rho = rank_corr([got[name(t)]["val_acc"] for t in scored], [t.retrain_acc for t in scored])
        rows.append({"proxy": f"re-scored: {subset:g} of the split, {epochs} epochs", "trials": len(scored),
                     "kendall": tau, "spearman": rho,
                     "seconds": sum(got[name(t)]["seconds"] for t in scored) / len(scored)})  # fmt: skip
    return rows


def _run(jobs: dict, lanes: int):
    """(job key, proxy_score's result) for each job, as each finishes."""
    if lanes <= 1 or len(jobs) <= 1:
        for key, args in jobs.items():
            yield key, proxy_score(*args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawned, not forked: this process has used torch's thread pool, which a fork would inherit broken
    with ProcessPoolExecutor(min(lanes, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_share_cores, initargs=(lanes,)) as pool:  # fmt: skip
        futures = {pool.submit(proxy_score, *args): key for key, args in jobs.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _share_cores(lanes: int) -> None:
    import torch

    from nas.device import threads_per_worker

    torch.set_num_threads(threads_per_worker(lanes))


def variant_key(subset: float, epochs: int) -> str:
    return f"{subset:g}:{epochs}"


@functools.cache  # per process: a lane (or this process) trains many proxies on one dataset
def dataset(data_name: str):
    from nas.data import load_dataset

    return load_dataset(data_name)


@functools.lru_cache(maxsize=1)  # the jobs come variant by variant: one split at a time
def proxy_split(data_name: str, val_size: int, seed: int, subset: float, device: str):
    from nas.data import validation_split

    return validation_split(dataset(data_name), val_size, seed, subset).to(device, check_memory=False)  # a benchmark: fit reports an oom


def proxy_score(data_name: str, val_size: int, seed: int, subset: float, spec, recipe, device: str) -> dict:
    """One proxy training of `spec` with `recipe` on `subset` of the study's own training split,
    scored on its validation split: what a search of that proxy size would have stored."""
    from nas.train import fit

    split = proxy_split(data_name, val_size, seed, subset, device)
    # CPU seconds of this process (all its threads), not wall time: a lane that shares its core with
    # another job is not charged for the wait. On a GPU (where the CPU mostly waits) use wall time.
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    start = clock()
    result = fit(spec, recipe, split, device=device)
    return {"val_acc": result.final.get("val_acc", 0.0), "seconds": clock() - start, "status": result.status}


def name(t) -> str:
    return f"{t.study.study_name}/{t.number}"


PRUNERS = {  # name: a fresh pruner for a proxy of `epochs` epochs; what nas uses is make_pruner's row
    "nas search --pruner hyperband": lambda epochs: make_pruner("hyperband", epochs),
    "nas search --pruner median": lambda epochs: make_pruner("median", epochs),
    "hyperband, min resource 1": lambda epochs: optuna.pruners.HyperbandPruner(1, epochs, 3),
    "hyperband, min resource 2": lambda epochs: optuna.pruners.HyperbandPruner(2, epochs, 3),
    "hyperband, min resource 3": lambda epochs: optuna.pruners.HyperbandPruner(3, epochs, 3),
    "median, after epoch 1": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "median, after epoch 2": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    "median, after epoch 3": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
}


PROXY_IDENTITY = ("dataset", "split", "proxy_epochs", "proxy_subset")  # what pooled studies must share
REPLAYS = 20  # Hyperband puts a trial in a bracket by a hash of the study name: average over names


def replay(pruner, curves: list[dict[int, float]], name: str) -> list[int]:
    """Feed each curve epoch by epoch, in trial order, to an in-memory study with `pruner`; the
    epoch each trial would have stopped at (its last when never pruned)."""
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name=name)
    stops = []
    for curve in curves:
        trial, last = study.ask(), max(curve)
        stop = last
        for k in sorted(curve):
            trial.report(curve[k], k)
            if k < last and trial.should_prune():
                stop = k
                break
        study.tell(trial, curve[last] if stop == last else None,
                   state=TrialState.COMPLETE if stop == last else TrialState.PRUNED)  # fmt: skip
        stops.append(stop)
    return stops


def pruner_rows(trials: list, retrained: dict[int, float], epochs: int) -> list[dict]:
    """Each pruner replayed over the trained trials' full curves (means over REPLAYS study names):
    its share of the proxy epochs, whether the best full-proxy trial survived, and Kendall tau of
    its search ranking (complete trials by score, then pruned ones by how far they got and their
    last score, as nas report ranks them) with the full proxy's over every trial and with the
    retrains where there are 3 or more."""
    curves = [dict(t.intermediate_values) for t in trials]
    full = [c[epochs] for c in curves]
    best = max(range(len(trials)), key=lambda i: full[i])
    rows = [{"pruner": "none", "epochs": 1.0, "best kept": "yes", "tau vs full proxy": 1.0,
             "tau vs retrain": _tau_retrain(trials, full, retrained)}]  # fmt: skip
    for name, make in PRUNERS.items():
        runs = []
        for r in range(REPLAYS):
            stops = replay(make(epochs), curves, f"replay-{r}")
            order = [stop * 10 + curves[i][stop] for i, stop in enumerate(stops)]  # further first, then by score (< 1)
            runs.append((sum(stops) / (epochs * len(stops)), stops[best] == epochs, rank_corr(order, full)[0],
                         _tau_retrain(trials, order, retrained)))  # fmt: skip
        kept = sum(r[1] for r in runs)
        retrain = [r[3] for r in runs if r[3] is not None]
        rows.append({"pruner": name, "epochs": statistics.mean(r[0] for r in runs),
                     "best kept": "yes" if kept == REPLAYS else f"{kept} of {REPLAYS} replays",
                     "tau vs full proxy": statistics.mean(r[2] for r in runs),
                     "tau vs retrain": statistics.mean(retrain) if retrain else None})  # fmt: skip
    return rows


def _tau_retrain(trials: list, order: list[float], retrained: dict[int, float]) -> float | None:
    pairs = [(o, retrained[t.number]) for t, o in zip(trials, order) if t.number in retrained]
    return rank_corr(*zip(*pairs))[0] if len(pairs) >= 3 else None


def pruner_table(rows: list[dict]) -> str:
    lines = ["| pruner (replayed) | proxy epochs spent | best full-proxy trial kept | Kendall tau vs full proxy "
             "| Kendall tau vs retrain |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        retrain = "n/a (under 3 retrains)" if r["tau vs retrain"] is None else f"{r['tau vs retrain']:.3f}"
        lines.append(f"| {r['pruner']} | {r['epochs']:.0%} | {r['best kept']} | {r['tau vs full proxy']:.3f} | {retrain} |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    lines = ["| proxy | trials | Kendall tau | Spearman | proxy s/trial | tau per CPU-minute |", "|---|---|---|---|---|---|"]
    for r in rows:
        per = f"{r['kendall'] / (r['seconds'] / 60):.3f}" if r["seconds"] > 0 else "n/a"
        lines.append(f"| {r['proxy']} | {r['trials']} | {r['kendall']:.3f} | {r['spearman']:.3f} | {r['seconds']:.0f} | {per} |")
    lines.append("\nSeconds: a study curve's, the wall time its search measured per epoch; a re-score's, the CPU time "
                 "of its training process (on a GPU, wall time).")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", action="append", required=True, help="a study; repeat to pool studies of one proxy")
    p.add_argument("--storage", action="append", help="its storage URL (default studies/<study>.db); one per --study")
    p.add_argument("--rescore", default="", help="proxy sizes to re-score, e.g. 0.1:3,0.5:5 (fraction:epochs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lanes", type=int, default=1, help="re-scoring trainings side by side, each in its own process "
                   "with its share of the cores (on a CPU, one per core trains fastest)")
    p.add_argument("--record", help="append the table to this Markdown file")
    p.add_argument("--cache", help="re-scored proxies kept here, so a rerun trains none twice "
                   "(default studies/<first study>/proxy-fidelity.json)")
    a = p.parse_args()
    if a.lanes < 1:
        sys.exit(f"--lanes must be at least 1, got {a.lanes}.")
    if a.storage and len(a.storage) != len(a.study):
        sys.exit(f"{len(a.study)} --study but {len(a.storage)} --storage: give one storage per study, or none.")

    from nas.study import STUDIES_DIR, load_study

    studies = [load_study(url, name) for name, url in zip(a.study, a.storage or [None] * len(a.study))]
    proxy = {k: studies[0].user_attrs.get(k) for k in PROXY_IDENTITY}
    for study in studies[1:]:
        other = {k: study.user_attrs.get(k) for k in PROXY_IDENTITY}
        if other != proxy:
            sys.exit(f"studies {studies[0].study_name} and {study.study_name} ran different proxies ({proxy} vs {other}); "
                     "their scores do not pool.")  # fmt: skip
    text, trials, lengths = "", [], set()
    for study in studies:
        retrained, length = retrained_trials(study)
        trials += retrained
        lengths |= {length} if retrained else set()
        full = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if len(t.intermediate_values) == proxy["proxy_epochs"]]  # fmt: skip
        if len(full) < 3:
            sys.exit(f"study {study.study_name} has {len(full)} complete proxy curves; replaying pruners needs at least 3.")
        text += (f"study {study.study_name}: {len(full)} complete proxy curves, {len(retrained)} trials retrained "
                 f"{length} epochs; its proxy: {proxy['proxy_epochs']} epochs on {proxy['proxy_subset']:g} of the "
                 f"training split\n\n")  # fmt: skip
        text += pruner_table(pruner_rows(full, {t.number: t.retrain_acc for t in retrained}, proxy["proxy_epochs"])) + "\n"
    if len(lengths) > 1:
        sys.exit(f"the studies' retrains differ in length ({sorted(lengths)} epochs) and do not compare; retrain them alike.")
    if len(trials) >= 3:
        variants = [(float(s), int(e)) for s, e in (v.split(":") for v in a.rescore.split(",") if v)]
        rows = curve_rows(trials) + baseline_rows(trials)
        if variants:
            cache = Path(a.cache or STUDIES_DIR / studies[0].study_name / "proxy-fidelity.json")
            rows += rescore(trials, variants, cache, a.device, a.lanes)
        pooled = f"{len(trials)} retrained trials of {' and '.join(s.study_name for s in studies)}"
        text += f"Proxy against retrain over {pooled}:\n\n" + table(rows)
    else:
        text += f"(proxy against retrain: {len(trials)} retrained trials, 3 needed, 8 or more to mean much)\n"
    print(text)
    if a.record:
        from nas.bench import cpu_model

        with open(a.record, "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d')} · CPU ({cpu_model()}) · `python benchmarks/proxy_fidelity.py "
                    f"{' '.join(sys.argv[1:])}`\n\n{text}")


if __name__ == "__main__":
    main()
