"""How well does a proxy training rank architectures, per CPU-second? (issue 12, item 3)

Ground truth: the retrain test accuracies a study holds (`nas retrain`, all of one length). Against
it, Kendall tau and Spearman of:
  - the study's own proxy curves, epoch by epoch: what a pruner deciding at epoch k sees (Hyperband
    with min resource k, or a median rule after k warm-up epochs), and what stopping there would cost;
  - re-scored proxies of other sizes (`--rescore 0.1:3,0.5:5`: training-split fraction : epochs),
    each configuration trained again with its own recipe compressed to that length, on the study's
    own validation split;
  - the baselines to beat: parameter count alone, MACs alone.
And every candidate score of `nas.score` (issue 18), each with Kendall tau and its bootstrap 90%
interval over all retrained nets and over those within 80-100% of the budget (the nets a search
must tell apart), CPU seconds per net and tau per CPU-minute:
  - from each re-scored proxy's history: its validation accuracy, training speed (TSE) and the
    extrapolated learning curve; `--rescore 0.2:5:constant` trains with a constant learning rate
    instead of the recipe's schedule compressed to the proxy;
  - `--zero-cost`: synflow, snip and naswot at initialisation, on 64 training images;
  - rank ensembles of the parameter count with each of the others.
A net retrained with several seeds counts once, at its mean accuracy.
Re-scores are cached in <study's folder beside its storage>/proxy-fidelity.json (or --cache), so the script resumes
where it stopped. Several studies of one proxy (the same data, split and proxy size: a TPE search
and its random-sampling control) pool their retrained trials for the correlations; each study's
curves are replayed through the pruners on their own.

Pruners are judged without training anything: the study's full curves (searched with --pruner none)
are replayed in trial order through each pruner, and what it would have stopped is compared with
what the unpruned search found: epochs saved, whether the best trials survive, and how the pruned
search's ranking agrees with the full proxy's (over every trained trial) and with the retrains.

    python benchmarks/proxy_fidelity.py --study tiny-tpe [--rescore 0.1:3,0.2:5,0.5:5 --lanes 2] [--record benchmarks/RESULTS.md]
    python benchmarks/proxy_fidelity.py --study a --storage journal:a.journal --study b --storage journal:b.journal \
        --rescore 0.2:5,0.2:5:constant --zero-cost
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
    """(trials with a retrain, each with its mean retrain accuracy over seeds, the retrain length);
    refuses retrains of different lengths, whose accuracies would not compare."""

    from nas.retrain import base_name, retrains

    done: dict[int, list[dict]] = {}  # trial number -> its retrains, one per seed
    for k, v in retrains(study).items():
        if k.startswith("trial-"):
            done.setdefault(int(base_name(k).split("-")[1]), []).append(v)
    lengths = {v["retrain_epochs"] for runs in done.values() for v in runs}
    if len(lengths) > 1:
        sys.exit(f"retrains of different lengths ({sorted(lengths)} epochs) do not compare; retrain them alike.")
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in done]
    for t in trials:
        t.retrain_acc = statistics.mean(v["retrain_test_acc"] for v in done[t.number])
        t.study = study
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


def rescore(trials: list, variants: list[tuple[float, int, str]], cache: Path, device: str, lanes: int = 1) -> list[dict]:
    """Train each configuration again as a proxy of each size, `lanes` trainings side by side (each in
    its own process with its share of the cores); results cached per (variant, study/trial) as they
    come, so a stopped run loses at most the trainings in flight."""
    from dataclasses import replace

    from nas.retrain import trial_target

    done = load_cache(cache)
    attrs = trials[0].study.user_attrs  # one proxy: main() checked that the studies agree
    split = (attrs["dataset"], attrs["split"]["val_size"], attrs["split"]["seed"])
    jobs = {}  # (variant key, trial name): what proxy_score trains
    for subset, epochs, schedule in variants:
        for t in trials:
            if name(t) not in done.get(variant_key(subset, epochs, schedule), {}):
                target = trial_target(t.study, t.number, dataset(attrs["dataset"]).shape)
                recipe = target.recipe.compressed(epochs)
                if schedule != COMPRESSED:
                    recipe = replace(recipe, schedule=schedule)
                jobs[variant_key(subset, epochs, schedule), name(t)] = (*split, subset, target.spec, recipe, device)
    for (key, trial), result in _run(jobs, lanes):
        done.setdefault(key, {})[trial] = result
        save_cache(cache, done)
        print(f"  {key} {trial}: val {result['val_acc']:.4f} in {result['seconds']:.0f} s", flush=True)
    rows = []
    for subset, epochs, schedule in variants:
        got = done.get(variant_key(subset, epochs, schedule), {})
        scored = [t for t in trials if name(t) in got]
        tau, rho = rank_corr([got[name(t)]["val_acc"] for t in scored], [t.retrain_acc for t in scored])
        rows.append({"proxy": f"re-scored: {describe_variant(subset, epochs, schedule)}", "trials": len(scored),
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


COMPRESSED = "compressed"  # the recipe's own schedule, compressed to the proxy's epochs (what nas search trains)


def parse_variants(text: str) -> list[tuple[float, int, str]]:
    """'0.1:3,0.2:5:constant' -> [(0.1, 3, 'compressed'), (0.2, 5, 'constant')]."""
    out = []
    for v in filter(None, text.split(",")):
        subset, epochs, *schedule = v.split(":")
        out.append((float(subset), int(epochs), schedule[0] if schedule else COMPRESSED))
    return out


def variant_key(subset: float, epochs: int, schedule: str = COMPRESSED) -> str:
    return f"{subset:g}:{epochs}" + ("" if schedule == COMPRESSED else f":{schedule}")


def describe_variant(subset: float, epochs: int, schedule: str = COMPRESSED) -> str:
    lr = "" if schedule == COMPRESSED else f", {schedule} learning rate"
    return f"{subset:g} of the split, {epochs} epochs{lr}"


def load_cache(cache: Path) -> dict:
    return json.loads(cache.read_text()) if cache.exists() else {}


def save_cache(cache: Path, done: dict) -> None:
    """Written to a temporary name and renamed: a kill mid-write keeps the last whole cache."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps(done, indent=1))
    tmp.replace(cache)


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
    history = [{k: row[k] for k in ("epoch", "train_loss", "val_acc")} for row in result.history]
    return {"val_acc": result.final.get("val_acc", 0.0), "seconds": clock() - start, "status": result.status,
            "history": history}  # fmt: skip


def name(t) -> str:
    return f"{t.study.study_name}/{t.number}"


INIT_KEY = "init"  # the cache's zero-cost scores, per net
INIT_IMAGES = 64


def zero_cost(trials: list, cache: Path) -> None:
    """synflow, snip and naswot of every net at initialisation, on the same 64 training images of the
    studies' own split, with the CPU seconds each net's three scores took; cached like the re-scores."""
    import torch

    from nas.augment import Normalize, prepare
    from nas.retrain import trial_target
    from nas.score import init_scores

    done = load_cache(cache)
    got = done.setdefault(INIT_KEY, {})
    attrs = trials[0].study.user_attrs
    todo = [t for t in trials if name(t) not in got]
    if not todo:
        return
    split = proxy_split(attrs["dataset"], attrs["split"]["val_size"], attrs["split"]["seed"], 1.0, "cpu")
    pick = torch.randperm(len(split.train_y), generator=torch.Generator().manual_seed(0))[:INIT_IMAGES]
    images = prepare(split.train_x[pick], Normalize(split.mean, split.std, "cpu"), torch.float32, torch.contiguous_format)
    for t in todo:
        spec = trial_target(t.study, t.number, dataset(attrs["dataset"]).shape).spec
        start = time.process_time()
        got[name(t)] = {**init_scores(spec, images, split.train_y[pick]), "seconds": time.process_time() - start}
        save_cache(cache, done)
        print(f"  zero-cost {name(t)}: {got[name(t)]}", flush=True)


def candidates(trials: list, cache: Path, variants: list[tuple[float, int, str]], retrain_epochs: int) -> dict[str, tuple[list, float]]:
    """Every candidate score of every net that has it: name -> (values in `trials` order, CPU s per net).
    A candidate some net lacks (a re-score cut short, one cached before histories were kept) is left out."""
    from nas import score

    done = load_cache(cache)
    out = {"params (no training)": ([t.user_attrs["params"] for t in trials], 0.0),
           "MACs (no training)": ([t.user_attrs["macs"] for t in trials], 0.0),
           "study proxy: val_acc": ([t.value for t in trials],
                                    statistics.mean(sum(t.user_attrs.get("epoch_seconds", [])) for t in trials))}  # fmt: skip
    for subset, epochs, schedule in variants:
        got = done.get(variant_key(subset, epochs, schedule), {})
        runs = [got.get(name(t)) for t in trials]
        if not all(r and "history" in r for r in runs):
            continue
        seconds = statistics.mean(r["seconds"] for r in runs)
        label = describe_variant(subset, epochs, schedule)
        out[f"{label}: val_acc"] = ([score.val_acc(r["history"]) for r in runs], seconds)
        out[f"{label}: TSE"] = ([score.tse(r["history"]) for r in runs], seconds)
        reach = score.horizon(retrain_epochs, subset)  # as nas search --score extrapolated reads it
        out[f"{label}: extrapolated"] = ([score.extrapolated(r["history"], reach) for r in runs], seconds)
    init = [done.get(INIT_KEY, {}).get(name(t)) for t in trials]
    if all(init):
        for key in score.INIT_SCORES:
            out[f"zero-cost: {key}"] = ([r[key] for r in init], statistics.mean(r["seconds"] for r in init) / 3)
    return out


def score_rows(trials: list, found: dict[str, tuple[list, float]], budget: int) -> list[dict]:
    """Each candidate's fidelity over all nets and over those within 80-100% of the budget, and the
    rank ensemble of the parameter count with each trained or zero-cost candidate."""
    from nas.score import fidelity, rank_ensemble

    truth = [t.retrain_acc for t in trials]
    band = [i for i, t in enumerate(trials) if t.user_attrs["params"] >= BAND * budget]
    params = found["params (no training)"][0]

    def measured(label: str, values_of, seconds: float) -> dict:
        row = {"score": label, "seconds": seconds, "all": fidelity(values_of(range(len(trials))), truth)}
        if len(band) >= 3:
            row["band"] = fidelity(values_of(band), [truth[i] for i in band])
        return row

    rows = []
    for label, (values, seconds) in found.items():
        rows.append(measured(label, lambda idx, v=values: [v[i] for i in idx], seconds))
    for label, (values, seconds) in found.items():
        if "no training" in label:
            continue
        ensemble = lambda idx, v=values: rank_ensemble([params[i] for i in idx], [v[i] for i in idx])  # noqa: E731
        rows.append(measured(f"rank ensemble: params + {label}", ensemble, seconds))
    return rows


BAND = 0.8  # nets within 80-100% of the budget: where a search must rank by more than size


def score_table(rows: list[dict], budget: int) -> str:
    lines = [f"| score | CPU s/net | Kendall tau, all [90% CI] | n | tau, {BAND:.0%}-100% of {budget:,} [90% CI] | n "
             "| tau per CPU-minute |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["all"].tau):
        band = r.get("band")
        per = f"{r['all'].tau / (r['seconds'] / 60):.3f}" if r["seconds"] > 0 else "free"
        lines.append(f"| {r['score']} | {r['seconds']:.1f} | {r['all']} | {r['all'].n} | "
                     f"{band if band else 'n/a'} | {band.n if band else 0} | {per} |")  # fmt: skip
    lines.append("\nIntervals: percentile bootstrap over nets (2,000 draws). Ground truth: the retrains' test "
                 "accuracy, a net retrained with several seeds at its mean. CPU seconds: of the scoring process "
                 "(a study curve's: the wall time its search measured).")  # fmt: skip
    return "\n".join(lines) + "\n"


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
    p.add_argument("--rescore", default="", help="proxy sizes to re-score, e.g. 0.1:3,0.5:5 (fraction:epochs), "
                   "0.2:5:constant for a constant learning rate instead of the compressed schedule")
    p.add_argument("--zero-cost", action="store_true", help="score every net with synflow, snip and naswot at init")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lanes", type=int, default=1, help="re-scoring trainings side by side, each in its own process "
                   "with its share of the cores (on a CPU, one per core trains fastest)")
    p.add_argument("--record", help="append the table to this Markdown file")
    p.add_argument("--cache", help="re-scored proxies kept here, so a rerun trains none twice "
                   "(default: the first study's folder beside its storage)")
    a = p.parse_args()
    if a.lanes < 1:
        sys.exit(f"--lanes must be at least 1, got {a.lanes}.")
    if a.storage and len(a.storage) != len(a.study):
        sys.exit(f"{len(a.study)} --study but {len(a.storage)} --storage: give one storage per study, or none.")

    from nas.study import load_study, study_home, study_url

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
        variants = parse_variants(a.rescore)
        rows = curve_rows(trials) + baseline_rows(trials)
        cache = Path(a.cache or study_home(studies[0].study_name, study_url(studies[0])) / "proxy-fidelity.json")
        if variants:
            rows += rescore(trials, variants, cache, a.device, a.lanes)
        if a.zero_cost:
            zero_cost(trials, cache)
        pooled = f"{len(trials)} retrained trials of {' and '.join(s.study_name for s in studies)}"
        text += f"Proxy against retrain over {pooled}:\n\n" + table(rows)
        budget = studies[0].user_attrs["budget"]
        found = candidates(trials, cache, variants, lengths.copy().pop())
        text += (f"\nCandidate scores against retrain over {pooled} ({sum(t.user_attrs['params'] >= BAND * budget for t in trials)} "
                 f"within {BAND:.0%}-100% of the budget):\n\n" + score_table(score_rows(trials, found, budget), budget))  # fmt: skip
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
