"""How well does a proxy training rank architectures, per CPU-second? (issue 12, item 3)

Ground truth: the retrain test accuracies a study holds (`nas retrain`, all of one length). Against
it, Kendall tau and Spearman of:
  - the study's own proxy curves, epoch by epoch: what a pruner deciding at epoch k sees (Hyperband
    with min resource k, or a median rule after k warm-up epochs), and what stopping there would cost;
  - re-scored proxies of other sizes (`--rescore 0.1:3,0.5:5`: training-split fraction : epochs),
    each configuration trained again with its own recipe compressed to that length, on the study's
    own validation split;
  - the baselines to beat: parameter count alone, MACs alone.
Re-scores are cached in studies/<study>/proxy-fidelity.json, so the script resumes where it stopped.

    python benchmarks/proxy_fidelity.py --study tiny-tpe [--rescore 0.1:3,0.2:5,0.5:5] [--record benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd


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
        t.retrain_acc = done[t.number]["retrain_test_acc"]
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


def rescore(study, trials: list, variants: list[tuple[float, int]], cache: Path, device: str) -> list[dict]:
    """Train each configuration again as a proxy of each size; results cached per (variant, trial)."""
    from nas.data import load_dataset, validation_split
    from nas.retrain import trial_target
    from nas.train import fit

    done = json.loads(cache.read_text()) if cache.exists() else {}
    attrs = study.user_attrs
    ds = load_dataset(attrs["dataset"])
    split_info = attrs["split"]
    rows = []
    for subset, epochs in variants:
        key = f"{subset}:{epochs}"
        split = None
        for t in trials:
            if str(t.number) in done.get(key, {}):
                continue
            if split is None:
                split = validation_split(ds, split_info["val_size"], split_info["seed"], subset).to(device)
            target = trial_target(study, t.number, ds.shape)
            start = time.perf_counter()
            result = fit(target.spec, target.recipe.compressed(epochs), split, device=device)
            seconds = time.perf_counter() - start
            done.setdefault(key, {})[str(t.number)] = {"val_acc": result.final.get("val_acc", 0.0), "seconds": seconds,
                                                       "status": result.status}  # fmt: skip
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(done, indent=1))
            print(f"  {key} trial {t.number}: val {done[key][str(t.number)]['val_acc']:.4f} in {seconds:.0f} s", flush=True)
        got = done.get(key, {})
        scored = [t for t in trials if str(t.number) in got]
        tau, rho = rank_corr([got[str(t.number)]["val_acc"] for t in scored], [t.retrain_acc for t in scored])
        rows.append({"proxy": f"re-scored: {subset:g} of the split, {epochs} epochs", "trials": len(scored),
                     "kendall": tau, "spearman": rho,
                     "seconds": sum(got[str(t.number)]["seconds"] for t in scored) / len(scored)})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| proxy | trials | Kendall tau | Spearman | proxy s/trial | tau per CPU-minute |", "|---|---|---|---|---|---|"]
    for r in rows:
        per = f"{r['kendall'] / (r['seconds'] / 60):.3f}" if r["seconds"] > 0 else "n/a"
        lines.append(f"| {r['proxy']} | {r['trials']} | {r['kendall']:.3f} | {r['spearman']:.3f} | {r['seconds']:.0f} | {per} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--storage")
    p.add_argument("--rescore", default="", help="proxy sizes to re-score, e.g. 0.1:3,0.5:5 (fraction:epochs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--record", help="append the table to this Markdown file")
    a = p.parse_args()

    from nas.study import STUDIES_DIR, load_study

    study = load_study(a.storage, a.study)
    trials, length = retrained_trials(study)
    if len(trials) < 3:
        sys.exit(f"study {a.study} has {len(trials)} retrained trials; rank correlation needs at least 3 (8 or more to mean much).")
    variants = [(float(s), int(e)) for s, e in (v.split(":") for v in a.rescore.split(",") if v)]
    rows = curve_rows(trials) + baseline_rows(trials)
    if variants:
        rows += rescore(study, trials, variants, STUDIES_DIR / study.study_name / "proxy-fidelity.json", a.device)
    attrs = study.user_attrs
    head = (f"study {study.study_name}: {len(trials)} trials retrained {length} epochs; its proxy: "
            f"{attrs['proxy_epochs']} epochs on {attrs['proxy_subset']:g} of the training split")  # fmt: skip
    text = f"{head}\n\n{table(rows)}"
    print(text)
    if a.record:
        from nas.bench import cpu_model

        with open(a.record, "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d')} · CPU ({cpu_model()}) · `python benchmarks/proxy_fidelity.py "
                    f"{' '.join(sys.argv[1:])}`\n\n{text}")


if __name__ == "__main__":
    main()
