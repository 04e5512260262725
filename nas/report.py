"""`nas report`: a study as a leaderboard (pandas: printed, CSV, Markdown), plotly figures, the
proxy's fidelity (rank correlation of proxy score and retrain accuracy), and the Markdown note
optuna-dashboard shows on the study and on each retrained trial."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import __version__
from nas.arch import ArchSpec
from nas.progress import recipe_brief, trained
from nas.retrain import retrains
from nas.study import REJECTED, STUDIES_DIR, StoredTrial

COLUMNS = ["name", "trial", "state", "proxy_val_acc", "params", "macs", "retrain_test_acc", "retrain_test_acc_tta",
           "retrain_epochs", "gpu_seconds", "arch", "recipe"]  # fmt: skip


def leaderboard(study: optuna.Study):
    """One row per trained trial and per retrained preset, best retrain first, then best proxy."""
    import pandas as pd

    done = retrains(study)
    rows = []
    for t in trained(study.get_trials(deepcopy=False)):
        a, r = t.user_attrs, done.get(f"trial-{t.number}", {})
        rows.append({"name": f"trial-{t.number}", "trial": t.number, "state": t.state.name.lower(),
                     "proxy_val_acc": t.value if t.state == TrialState.COMPLETE else _last(t),
                     "params": a["params"], "macs": a["macs"], **_retrain_columns(r),
                     "gpu_seconds": a.get("gpu_seconds"), "arch": ArchSpec.from_dict(a["arch"]).describe(),
                     "recipe": recipe_brief(a["recipe"])})  # fmt: skip
    for name, r in done.items():
        if name.startswith("preset-"):
            rows.append({"name": name, "trial": None, "state": "preset", "proxy_val_acc": None, "params": r["params"],
                         "macs": r["macs"], **_retrain_columns(r), "gpu_seconds": None,
                         "arch": ArchSpec.from_dict(r["spec"]).describe(), "recipe": recipe_brief(r["recipe"])})  # fmt: skip
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("trial", "retrain_epochs"):
        df[col] = df[col].astype("Int64")
    for col in ("proxy_val_acc", "retrain_test_acc", "retrain_test_acc_tta", "gpu_seconds"):
        df[col] = df[col].astype(float)  # None -> NaN: sortable, and blank in the printed table
    return df.sort_values(["retrain_test_acc", "proxy_val_acc"], ascending=False, na_position="last").reset_index(drop=True)


def _retrain_columns(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("retrain_test_acc", "retrain_test_acc_tta", "retrain_epochs")}


def _last(t: FrozenTrial) -> float | None:
    """A pruned trial's score: its last reported validation accuracy."""
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def fidelity(df) -> dict[str, Any] | None:
    """Rank correlation between proxy score and retrain accuracy over retrained trials (>= 3)."""
    both = df.dropna(subset=["proxy_val_acc", "retrain_test_acc"])
    both = both[both["trial"].notna()]
    if len(both) < 3:
        return None
    pair = both[["proxy_val_acc", "retrain_test_acc"]].astype(float)
    return {"trials": len(both), "kendall_tau": float(pair.corr(method="kendall").iloc[0, 1]),
            "spearman": float(pair.corr(method="spearman").iloc[0, 1])}  # fmt: skip


def markdown_table(df) -> str:
    import pandas as pd

    def cell(v: Any) -> str:
        if pd.isna(v):
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "/")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- figures


def accuracy_vs_params(study: optuna.Study, df):
    """Proxy accuracy against parameters, the budget line, the Pareto front (most accurate for its
    size), and the retrain accuracies where there are some."""
    import plotly.graph_objects as go

    budget = study.user_attrs.get("budget")
    scored = df.dropna(subset=["proxy_val_acc"]).sort_values("params")
    fig = go.Figure()
    fig.add_scatter(x=scored["params"], y=scored["proxy_val_acc"], mode="markers", name="proxy (validation)",
                    text=scored["name"] + ": " + scored["arch"], hovertemplate="%{text}<br>%{x:,} params<br>%{y:.4f}")  # fmt: skip
    front, best = [], -1.0
    for row in scored.itertuples():
        if row.proxy_val_acc > best:
            front.append(row)
            best = row.proxy_val_acc
    fig.add_scatter(x=[r.params for r in front], y=[r.proxy_val_acc for r in front], mode="lines+markers",
                    line_shape="hv", name="Pareto front")  # fmt: skip
    retrained = df.dropna(subset=["retrain_test_acc"])
    if len(retrained):
        fig.add_scatter(x=retrained["params"], y=retrained["retrain_test_acc"], mode="markers", name="retrain (test)",
                        marker_symbol="star", marker_size=12, text=retrained["name"],
                        hovertemplate="%{text}<br>%{x:,} params<br>%{y:.4f}")  # fmt: skip
    if budget:
        fig.add_vline(x=budget, line_dash="dash", annotation_text=f"budget {budget:,}")
    fig.update_layout(title=f"{study.study_name}: accuracy vs parameters", xaxis_title="parameters",
                      yaxis_title="accuracy")  # fmt: skip
    return fig


def derived_features(t: FrozenTrial) -> dict[str, Any]:
    """Features present in every trained trial: per-stage params exist only for some N, so
    Optuna's own importances would drop them; depth, widths and counts say more anyway."""
    a, r = t.user_attrs["arch"], t.user_attrs["recipe"]
    return {
        "log10 params": math.log10(t.user_attrs["params"]), "log10 MACs": math.log10(t.user_attrs["macs"]),
        "stages": len(a["blocks"]), "depth (blocks)": sum(a["blocks"]), "first width": a["channels"][0],
        "last width": a["channels"][-1], "kernel": max(a["kernel"]) if isinstance(a["kernel"], list) else a["kernel"],
        "stem kernel": a["stem_kernel"], "skip kernel": a["skip_kernel"], "block": a["block"], "se": a["se"],
        "pool": str(a["pool"]), "optimizer": r["optimizer"], "log10 lr": math.log10(r["lr"]),
        "batch size": r["batch_size"], "schedule": r["schedule"], "weight decay": r["weight_decay"],
        "cutout": r["cutout"], "mixup": r["mixup"], "cutmix": r["cutmix"], "label smoothing": r["label_smoothing"],
    }  # fmt: skip


def importances(study: optuna.Study) -> dict[str, float] | None:
    """PED-ANOVA importances of the derived features for the completed trials (no scikit-learn)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs]
    if len(complete) < 8:
        return None
    rows = [derived_features(t) for t in complete]
    dists = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if len(set(values)) < 2:
            continue  # a constant says nothing
        if all(isinstance(v, (int, float)) for v in values):
            dists[key] = FloatDistribution(float(min(values)), float(max(values)))
        else:
            dists[key] = CategoricalDistribution(sorted(set(values)))
    tmp = optuna.create_study(direction="maximize")
    for row, t in zip(rows, complete):
        params = {k: (float(row[k]) if isinstance(dists[k], FloatDistribution) else row[k]) for k in dists}
        tmp.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t.value))
    try:
        return optuna.importance.get_param_importances(tmp, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError):
        return None


def importance_figure(study: optuna.Study, imp: dict[str, float]):
    import plotly.graph_objects as go

    names = list(reversed(list(imp)))
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h"))
    fig.update_layout(title=f"{study.study_name}: what mattered for proxy accuracy (PED-ANOVA)",
                      xaxis_title="importance", height=300 + 20 * len(names))  # fmt: skip
    return fig


def report(study: optuna.Study, out: Path | None = None) -> dict[str, Any]:
    """Write leaderboard.csv/.md and the figures to `out` (default studies/<study>/report)."""
    from optuna.visualization import plot_intermediate_values, plot_optimization_history

    out = out or STUDIES_DIR / study.study_name / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = leaderboard(study)
    df.to_csv(out / "leaderboard.csv", index=False)
    fid = fidelity(df)
    md = f"# {study.study_name}\n\n" + markdown_table(df)
    if fid:
        md += f"\nProxy fidelity over {fid['trials']} retrained trials: Kendall tau {fid['kendall_tau']:.3f}, " \
              f"Spearman {fid['spearman']:.3f}.\n"  # fmt: skip
    (out / "leaderboard.md").write_text(md)
    figures = {"accuracy_vs_params.html": accuracy_vs_params(study, df)}
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        figures["history.html"] = plot_optimization_history(study)
        figures["intermediate.html"] = plot_intermediate_values(study)
    imp = importances(study)
    if imp:
        figures["importances.html"] = importance_figure(study, imp)
    for name, fig in figures.items():
        fig.write_html(out / name, include_plotlyjs="directory")  # one plotly.min.js beside them, works offline
    write_note(study)
    return {"dir": out, "leaderboard": df, "fidelity": fid, "figures": sorted(figures), "importances": imp}


# ------------------------------------------------------------------------------------ dashboard note


def note(study: optuna.Study) -> str:
    """The study's Markdown note: what was searched, the best trials, the retrain results."""
    a = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    done = trained(trials)
    rejected = sum(t.user_attrs.get("reason") in REJECTED for t in trials)
    lines = [
        f"## {study.study_name}",
        f"Budget **{a.get('budget', 0):,}** parameters · space `{a.get('space_path', '?')}` · data `{a.get('dataset', '?')}` "
        f"· proxy {a.get('proxy_epochs', '?')} epochs on {a.get('proxy_subset', 1):g} of the training split "
        f"(validation: {a.get('split', {}).get('val_size', '?')} images, seed {a.get('split', {}).get('seed', '?')}).",
        f"{len(done)} trials trained ({sum(t.state == TrialState.PRUNED for t in done)} pruned, "
        f"{sum(t.state == TrialState.FAIL for t in done)} failed); {rejected} proposals rejected before training "
        f"(over budget or invalid: user attr `reason`, `params`).",
    ]  # fmt: skip
    best = sorted((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:5]
    if best:
        lines += ["", "### Best trials (proxy validation accuracy)", "", "| trial | val acc | params | architecture | recipe |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t.number} | {t.value:.4f} | {t.user_attrs['params']:,} | "
                  f"{ArchSpec.from_dict(t.user_attrs['arch']).describe()} | {recipe_brief(t.user_attrs['recipe'])} |"
                  for t in best]  # fmt: skip
    done_retrains = retrains(study)
    if done_retrains:
        lines += ["", "### Retrained in full (official test set)", "", "| name | test acc | flip-TTA | epochs | params | proxy val |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in sorted(done_retrains.items(), key=lambda kv: -kv[1]["retrain_test_acc"]):
            proxy = f"{r['proxy_val_acc']:.4f}" if r.get("proxy_val_acc") is not None else ""
            lines.append(f"| {name} | {r['retrain_test_acc']:.4f} | {r['retrain_test_acc_tta']:.4f} | "
                         f"{r['retrain_epochs']} | {r['params']:,} | {proxy} |")  # fmt: skip
        lines.append("\nFiles: study artifacts `<name>-model.pt`, `-history.csv`, `-metrics.json`, `-curves.html`.")
    lines.append(f"\n_Written by nas {__version__}; `nas report` refreshes it._")
    return "\n".join(lines)


def write_note(study: optuna.Study) -> bool:
    """Save the study note, and a note on each retrained trial, where optuna-dashboard is installed
    (`pip install -e .[dashboard]`); returns whether it could."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    save_note(study, note(study))
    trials = study.get_trials(deepcopy=False)
    for name, r in retrains(study).items():
        if name.startswith("trial-"):
            number = int(name.split("-", 1)[1])
            trial = optuna.Trial(study, StoredTrial.of(study, trials[number]).trial_id)  # notes live on the study
            save_note(trial, f"### Retrained in full\nTest accuracy **{r['retrain_test_acc']:.4f}** (flip-TTA "
                             f"{r['retrain_test_acc_tta']:.4f}) after {r['retrain_epochs']} epochs in "
                             f"{r['retrain_seconds']:.0f} s. Files: study artifacts `{name}-*`.")  # fmt: skip
    return True
