"""`nas report`: a study as a leaderboard (pandas: printed, CSV, Markdown), plotly figures, the
proxy's fidelity (rank correlation of proxy score and retrain accuracy), and what optuna-dashboard
shows of it: the study note, a note on each retrained trial linking its files, and two figures on
the study page (the budget check of every proposal, accuracy against parameters; the same two for
MACs under a MAC limit, and for peak activation memory under a RAM limit)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import __version__
from nas.arch import ArchSpec
from nas.count import count_peak_memory
from nas.progress import arch_brief, fmt_params, fmt_seconds, proxy_words, recipe_brief, rejected_words, trained
from nas.recipe import Recipe
from nas.retrain import FIT_SUFFIX, base_name, describe, retrains
from nas.study import (FILL_MIN, METRIC, STUDIES_DIR, StoredTrial, artifact_dir, repeat, study_space, trial_arch,
                       trial_recipe, trial_seconds)  # fmt: skip

COLUMNS = ["name", "trial", "state", "proxy_val_acc", "proxy_epochs", "params", "macs", "ram", "retrain_test_acc",
           "retrain_test_acc_tta", "retrain_epochs", "proxy_seconds", "arch", "recipe"]  # fmt: skip
STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2}  # a pruned score is from fewer epochs: below every complete one
MIN_IMPORTANCE_TRIALS = 8
MIN_FIDELITY_TRIALS = 3


def leaderboard(study: optuna.Study):
    """One row per trained trial and per retrained preset: retrained ones first by test accuracy,
    then complete trials by proxy score, then pruned ones (scored after fewer epochs), then failed."""
    import pandas as pd

    done = retrains(study)
    proxy_epochs = study.user_attrs.get("proxy_epochs")
    rows = []
    for t in trained(study.get_trials(deepcopy=False)):
        a, r = t.user_attrs, done.get(f"trial-{t.number}", {})
        last = max(t.intermediate_values, default=None)
        rows.append({"name": f"trial-{t.number}", "trial": t.number, "state": _state(t),
                     "proxy_val_acc": t.value if t.state == TrialState.COMPLETE else _last(t),
                     "proxy_epochs": proxy_epochs if t.state == TrialState.COMPLETE else last,
                     "params": a["params"], "macs": a["macs"], "ram": _ram(trial_arch(t)), **_retrain_columns(r),
                     "proxy_seconds": trial_seconds(t), "arch": arch_brief(t), "recipe": recipe_brief(t)})  # fmt: skip
    for name, r in done.items():
        if name.startswith("trial-") and base_name(name) != name:  # another seed of a retrained trial
            rows.append({"name": name, "trial": int(base_name(name).split("-")[1]), "state": "seed",
                         "proxy_val_acc": None, "proxy_epochs": None, "params": r["params"], "macs": r["macs"],
                         **_retrain_columns(r), "proxy_seconds": None, "arch": ArchSpec.from_dict(r["spec"]).describe(),
                         "recipe": Recipe.from_dict(r["recipe"]).describe()})  # fmt: skip
        if name.startswith("preset-"):
            size = {"params": r["params"], "macs": r["macs"], "ram": _ram(r["spec"])}
            over = any(size[measure] > limit for measure, limit in limits(study).items())  # any limit
            rows.append({"name": name, "trial": None, "state": "over budget" if over else "preset",
                         "proxy_val_acc": None, "proxy_epochs": None, **size,
                         **_retrain_columns(r), "proxy_seconds": None, "arch": ArchSpec.from_dict(r["spec"]).describe(),
                         "recipe": Recipe.from_dict(r["recipe"]).describe()})  # fmt: skip
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("trial", "proxy_epochs", "retrain_epochs"):
        df[col] = df[col].astype("Int64")
    for col in ("proxy_val_acc", "retrain_test_acc", "retrain_test_acc_tta", "proxy_seconds"):
        df[col] = df[col].astype(float)  # None -> NaN: sortable, and blank in the printed table
    df["_rank"] = df["state"].map(STATE_ORDER).fillna(0)
    df = df.sort_values(["retrain_test_acc", "_rank", "proxy_val_acc"], ascending=[False, True, False],
                        na_position="last")  # fmt: skip
    return df.drop(columns="_rank").reset_index(drop=True)


def _ram(arch: dict[str, Any] | None) -> int | None:
    """Peak activation bytes in int8, from the spec: trials searched before it was stored have it too."""
    return count_peak_memory(ArchSpec.from_dict(arch)) if arch else None


def _state(t: FrozenTrial) -> str:
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")


def _retrain_columns(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("retrain_test_acc", "retrain_test_acc_tta", "retrain_epochs")}


def _last(t: FrozenTrial) -> float | None:
    """A pruned trial's score: its last reported validation accuracy."""
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def fidelity(df) -> dict[str, Any] | None:
    """Rank correlation between proxy score and retrain accuracy over retrained complete trials (>= 3),
    with the baseline a proxy must beat to be worth its training: the parameter count alone."""
    both = df[(df["state"] == "complete")].dropna(subset=["proxy_val_acc", "retrain_test_acc"])
    if len(both) < MIN_FIDELITY_TRIALS:
        return None
    corr = both[["proxy_val_acc", "params", "retrain_test_acc"]].astype(float).corr
    kendall, spearman = corr(method="kendall")["retrain_test_acc"], corr(method="spearman")["retrain_test_acc"]
    lengths = sorted(int(n) for n in both["retrain_epochs"].dropna().unique())
    warnings = []
    if len(lengths) > 1:
        warnings.append(f"the retrains differ in length ({', '.join(map(str, lengths))} epochs): longer ones score "
                        f"higher whatever their proxy said; retrain them alike (nas retrain --epochs N --replace)")  # fmt: skip
    if kendall["params"] > kendall["proxy_val_acc"]:
        warnings.append(f"the parameter count alone ranks these retrains better than the proxy does (Kendall tau "
                        f"{kendall['params']:.3f} against {kendall['proxy_val_acc']:.3f}): retrain the largest trials "
                        f"too, not only the proxy's best, and try a longer proxy (--proxy-epochs, --proxy-subset)")  # fmt: skip
    return {"trials": len(both), "kendall_tau": float(kendall["proxy_val_acc"]), "spearman": float(spearman["proxy_val_acc"]),
            "params_kendall_tau": float(kendall["params"]), "retrain_epochs": lengths, "warnings": warnings}  # fmt: skip


def against_control(df, hint: str = "") -> str | None:
    """The search's best retrained net against the best hand design scaled to the same limits
    (`nas retrain --preset NAME --fit-budget`), each at its mean over the seeds retrained, in one
    plain sentence; None before any trial is retrained. `hint` names the study for the command."""
    retrained = df.dropna(subset=["retrain_test_acc"])
    searched = retrained[retrained["trial"].notna()]
    if searched.empty:
        return None
    searched = searched.assign(net="trial-" + searched["trial"].astype(str))
    fitted = retrained.loc[retrained["name"].map(lambda n: base_name(n).endswith(FIT_SUFFIX)).astype(bool)]
    fitted = fitted.assign(net=fitted["name"].map(base_name))
    if fitted.empty:
        return (f"No hand design scaled to the budget is retrained yet: `nas retrain --preset NAME --fit-budget{hint}` "
                f"(as many epochs as the trials) sets the search's best against one of the same size.")  # fmt: skip

    def best(rows) -> tuple[str, float, int, int]:
        means = rows.groupby("net").agg(acc=("retrain_test_acc", "mean"), seeds=("retrain_test_acc", "size"),
                                         params=("params", "first"))  # fmt: skip
        net = means["acc"].idxmax()
        return net, float(means.loc[net, "acc"]), int(means.loc[net, "seeds"]), int(means.loc[net, "params"])

    (s_net, s_acc, s_n, s_p), (h_net, h_acc, h_n, h_p) = best(searched), best(fitted)
    seeds = lambda n: f"{n} seed{'s' * (n != 1)}"  # noqa: E731
    both = (f"{s_net} {s_acc:.4f} ({seeds(s_n)}, {s_p:,} params) against {h_net} {h_acc:.4f} ({seeds(h_n)}, "
            f"{h_p:,} params)")  # fmt: skip
    lengths = sorted(int(n) for n in pd_unique(retrained["retrain_epochs"]))
    caveat = ("" if s_n > 1 and h_n > 1 else "; one seed: not yet set against the seed spread") + (
        f"; the retrains differ in length ({', '.join(map(str, lengths))} epochs)" if len(lengths) > 1 else "")
    if h_acc >= s_acc:
        return (f"A hand design scaled to the budget matches or beats the search: {both}{caveat}. The search has "
                f"not yet found anything a scaled hand design does not.")  # fmt: skip
    return f"The search's best beats the best hand design scaled to the budget by {100 * (s_acc - h_acc):.2f} points: {both}{caveat}."


def pd_unique(column) -> list:
    return list(column.dropna().unique())


def fidelity_line(fid: dict[str, Any]) -> str:
    return (f"Kendall tau {fid['kendall_tau']:.3f}, Spearman {fid['spearman']:.3f}; "
            f"the parameter count alone: Kendall tau {fid['params_kendall_tau']:.3f}")  # fmt: skip


def markdown_table(df) -> str:
    import pandas as pd

    def cell(v: Any) -> str:
        if pd.isna(v):
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def console_table(df, width: int) -> str:
    """The leaderboard for a terminal `width` columns wide: params and MACs in k/M, the optional
    columns dropped (MACs first) until the architecture has room, the architecture cut to fit."""
    import pandas as pd

    def num(v: Any, fmt) -> str:
        return "" if pd.isna(v) else fmt(v)

    columns = {  # header -> cell; in order of display
        "name": lambda r: r.name, "state": lambda r: r.state,
        "proxy": lambda r: num(r.proxy_val_acc, "{:.4f}".format), "ep": lambda r: num(r.proxy_epochs, str),
        "params": lambda r: fmt_params(r.params), "MACs": lambda r: f"{r.macs / 1e6:,.1f}M",
        "test": lambda r: num(r.retrain_test_acc, "{:.4f}".format),
        "TTA": lambda r: num(r.retrain_test_acc_tta, "{:.4f}".format),
        "epochs": lambda r: num(r.retrain_epochs, str), "time": lambda r: num(r.proxy_seconds, fmt_seconds),
    }
    rows = list(df.itertuples(index=False))
    cells = {h: [f(r) for r in rows] for h, f in columns.items()}
    widths = {h: max([len(h), *map(len, cells[h])]) for h in cells}
    for optional in ("MACs", "TTA", "time", "epochs"):
        if sum(widths.values()) + 2 * len(widths) + 20 <= width:
            break
        del widths[optional]
    room = max(10, width - sum(widths.values()) - 2 * len(widths))
    cut = lambda s: s if len(s) <= room else s[: room - 1] + "…"  # noqa: E731
    right = {"proxy", "ep", "params", "MACs", "test", "TTA", "epochs", "time"}
    line = lambda vals: "  ".join(v.rjust(widths[h]) if h in right else v.ljust(widths[h])  # noqa: E731
                                  for h, v in zip(widths, vals))  # fmt: skip
    out = [line(list(widths)) + "  arch"]
    out += [line([cells[h][i] for h in widths]) + "  " + cut(r.arch) for i, r in enumerate(rows)]
    return "\n".join(out)


def legend(shown: list[str]) -> str:
    """What the printed columns mean, for those `shown`."""
    words = {"proxy": f"{METRIC} after ep proxy epochs", "test": "retrain test accuracy",
             "TTA": "the same with flip-TTA", "epochs": "of the retrain", "time": "of the proxy training"}  # fmt: skip
    return "; ".join(f"{h}: {w}" for h, w in words.items() if h in shown) + "."


# -------------------------------------------------------------------------------------------- figures


# What each measure is called on an axis, the study attr holding its limit, and that limit's name.
MEASURES = {"params": ("parameters", "budget", "budget"), "macs": ("MACs per image", "max_macs", "MAC limit"),
            "ram": ("peak activation bytes (int8)", "max_ram", "RAM limit")}  # fmt: skip


def limits(study: optuna.Study) -> dict[str, int]:
    """The limits a study was searched under: {"params": budget, "macs": max_macs, "ram": max_ram} where set."""
    return {m: study.user_attrs[attr] for m, (_, attr, _) in MEASURES.items() if study.user_attrs.get(attr)}


def accuracy_vs(study: optuna.Study, df, measure: str = "params"):
    """Proxy accuracy against parameters or MACs (log axis: a preset far over the limit would
    squash the rest), the limit line, the Pareto front of complete trials (most accurate for its
    size or cost), pruned trials apart (scored after fewer epochs), and the retrain accuracies."""
    import plotly.graph_objects as go

    axis, _, limit_name = MEASURES[measure]
    limit = limits(study).get(measure)
    scored = df.dropna(subset=["proxy_val_acc"]).sort_values(measure)
    complete, pruned = scored[scored["state"] == "complete"], scored[scored["state"] != "complete"]
    hover = "%{text}<br>%{x:,} " + axis + "<br>%{y:.4f}"
    fig = go.Figure()
    fig.add_scatter(x=complete[measure], y=complete["proxy_val_acc"], mode="markers", name=f"{METRIC} (complete)",
                    text=complete["name"] + ": " + complete["arch"], hovertemplate=hover)  # fmt: skip
    if len(pruned):
        fig.add_scatter(x=pruned[measure], y=pruned["proxy_val_acc"], mode="markers", marker_color="#aaaaaa",
                        name="pruned (score when stopped)",
                        text=pruned["name"] + " after epoch " + pruned["proxy_epochs"].astype(str) + ": " + pruned["arch"],
                        hovertemplate=hover)  # fmt: skip
    front, best = [], -1.0
    for x, y in zip(complete[measure], complete["proxy_val_acc"]):
        if y > best:
            front.append((x, y))
            best = y
    fig.add_scatter(x=[x for x, _ in front], y=[y for _, y in front], mode="lines+markers", line_shape="hv",
                    name="Pareto front")  # fmt: skip
    retrained = df.dropna(subset=["retrain_test_acc"])
    if len(retrained):
        names = [n + (" (over budget)" if s == "over budget" else "") for n, s in zip(retrained["name"], retrained["state"])]
        fig.add_scatter(x=retrained[measure], y=retrained["retrain_test_acc"], mode="markers", name="retrain (test)",
                        marker_symbol="star", marker_size=12, text=names, hovertemplate=hover)  # fmt: skip
    if limit:
        ys = [*df["proxy_val_acc"].dropna(), *df["retrain_test_acc"].dropna()] or [0.0, 1.0]
        fig.add_scatter(x=[limit, limit], y=[min(ys), max(ys)], mode="lines", line={"dash": "dash", "color": "black"},
                        name=f"{limit_name} {limit:,}", hoverinfo="skip")  # fmt: skip
    fig.update_layout(title=f"{study.study_name}: accuracy vs {axis}", xaxis_title=f"{axis} (log scale)",
                      yaxis_title="accuracy", xaxis={"type": "log", "tickformat": "~s"})  # fmt: skip
    xs = [*scored[measure], *retrained[measure], *([limit] if limit else [])]
    if xs:  # padded: autorange puts the limit, usually the largest x, on the axis frame, where it is lost
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        pad = 0.05 * (hi - lo) or 0.1
        fig.update_xaxes(range=[lo - pad, hi + pad])  # a log axis takes its range in log10 units
    return fig


def _line(fig, x: list[float], y: float, name: str, dash: str) -> None:
    """A horizontal line as a trace: it has a legend entry, where a shape's label on a log axis
    would need log coordinates and is lost by some renderers."""
    fig.add_scatter(x=x, y=[y, y], mode="lines", line={"dash": dash, "color": "black"}, name=name, hoverinfo="skip")


KINDS = {"over_budget": "rejected: over budget", "over_macs": "rejected: over the MAC limit",
         "over_ram": "rejected: over the RAM limit",
         "underfilled": f"rejected: under {FILL_MIN:.0%} of the budget",  # a rejection's legend entry
         "repeat": "not trained: a repeat of a trained trial"}


def budget_check(study: optuna.Study, measure: str = "params"):
    """Every proposal's parameter count (or MACs) by trial number against the limit, by what became
    of it: the picture that tells a rejected proposal from a pruned training (the dashboard lists
    both as Pruned)."""
    import plotly.graph_objects as go

    axis, _, limit_name = MEASURES[measure]
    limit, fill = limits(study).get(measure), study.user_attrs.get("fill_budget") and measure == "params"
    groups: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if measure not in t.user_attrs:
            continue  # invalid, or not yet counted
        reason = t.user_attrs.get("reason")
        kind = (KINDS.get(reason) or ("trained" if t.state == TrialState.COMPLETE else "pruned" if reason == "pruned"
                else "running" if t.state == TrialState.RUNNING else "failed"))  # fmt: skip
        groups.setdefault(kind, []).append(t)
    colors = {"trained": "#1f77b4", "pruned": "#ff7f0e", KINDS["over_budget"]: "#d62728", KINDS["over_macs"]: "#9467bd",
              KINDS["over_ram"]: "#8c564b",
              KINDS["underfilled"]: "#e377c2", KINDS["repeat"]: "#bcbd22", "failed": "#7f7f7f",
              "running": "#2ca02c"}  # fmt: skip
    fig = go.Figure()
    numbers = [t.number for ts in groups.values() for t in ts] or [0]
    span = [min(numbers) - 0.5, max(numbers) + 0.5]
    if limit:
        _line(fig, span, limit, f"{limit_name} {limit:,}", "dash")
        if fill:
            _line(fig, span, FILL_MIN * limit, f"{FILL_MIN:.0%} of it", "dot")
    for kind, color in colors.items():
        ts = groups.get(kind, [])
        if ts:
            fig.add_scatter(x=[t.number for t in ts], y=[t.user_attrs[measure] for t in ts], mode="markers",
                            name=f"{kind} ({len(ts)})", marker_color=color,
                            text=[f"#{t.number}: {t.user_attrs[measure]:,} {axis}" for t in ts],
                            hovertemplate="%{text}<extra></extra>")  # fmt: skip
    what = {"params": "Budget check: every proposal's parameters", "macs": "MAC check: every proposal's MACs",
            "ram": "RAM check: every proposal's peak activation memory"}[measure]  # fmt: skip
    fig.update_layout(title=what, xaxis_title="trial", yaxis_title=f"{axis} (log scale)",
                      yaxis={"type": "log", "tickformat": "~s"})  # fmt: skip
    return fig


def derived_features(t: FrozenTrial) -> dict[str, Any]:
    """Features present in every trained trial: per-stage params exist only for some N, so
    Optuna's own importances would drop them; depth, widths and counts say more anyway."""
    a, r = trial_arch(t), trial_recipe(t)
    return {
        "log10 params": math.log10(t.user_attrs["params"]), "log10 MACs": math.log10(t.user_attrs["macs"]),
        "stages": len(a["blocks"]), "depth (blocks)": sum(a["blocks"]), "first width": a["channels"][0],
        "last width": a["channels"][-1], "kernel": max(a["kernel"]) if isinstance(a["kernel"], list) else a["kernel"],
        "stem kernel": a["stem_kernel"], "skip kernel": a["skip_kernel"], "block": a["block"], "se": a["se"],
        "pool": str(a["pool"]), "optimizer": r["optimizer"], "log10 lr": math.log10(r["lr"]),
        "batch size": r["batch_size"], "schedule": r["schedule"], "weight decay": r["weight_decay"],
        "cutout": r["cutout"], "mixup": r["mixup"], "cutmix": r["cutmix"], "label smoothing": r["label_smoothing"],
    }  # fmt: skip


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """PED-ANOVA importances of the derived features for the completed trials (no scikit-learn),
    or None and why there are none."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trial_arch(t) and not repeat(t)]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, f"{len(complete)} complete trial{'s' * (len(complete) != 1)}, {MIN_IMPORTANCE_TRIALS} needed"
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
    if not dists:
        return None, "every feature has one value across the complete trials"
    tmp = optuna.create_study(direction="maximize")
    for row, t in zip(rows, complete):
        params = {k: (float(row[k]) if isinstance(dists[k], FloatDistribution) else row[k]) for k in dists}
        tmp.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=t.value))
    try:
        return optuna.importance.get_param_importances(tmp, evaluator=optuna.importance.PedAnovaImportanceEvaluator()), ""
    except (ValueError, RuntimeError) as e:
        return None, f"PED-ANOVA failed: {e}"


def importance_figure(study: optuna.Study, imp: dict[str, float]):
    import plotly.graph_objects as go

    names = list(reversed(list(imp)))
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h"))
    fig.update_layout(title=f"{study.study_name}: what mattered for {METRIC} (PED-ANOVA)",
                      xaxis_title="importance", height=300 + 20 * len(names))  # fmt: skip
    return fig


def report(study: optuna.Study, out: Path | None = None) -> dict[str, Any]:
    """Write leaderboard.csv/.md and the figures to `out` (default studies/<study>/report); returns
    them with the fidelity and, for what was left out, why."""
    from optuna.visualization import plot_intermediate_values, plot_optimization_history

    out = out or STUDIES_DIR / study.study_name / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = leaderboard(study)
    df.to_csv(out / "leaderboard.csv", index=False)
    fid, skipped = fidelity(df), {}
    if not fid:
        n = int(((df["state"] == "complete") & df["retrain_test_acc"].notna()).sum())
        skipped["proxy fidelity"] = (f"{n} retrained complete trial{'s' * (n != 1)}, {MIN_FIDELITY_TRIALS} needed "
                                     f"(nas retrain --top {MIN_FIDELITY_TRIALS})")  # fmt: skip
    md = f"# {study.study_name}\n\n" + markdown_table(df)
    control = against_control(df, f" --study {study.study_name}")
    if control:
        md += f"\n{control}\n"
    if fid:
        md += f"\nProxy fidelity over {fid['trials']} retrained trials: {fidelity_line(fid)}.\n"
        md += "".join(f"\n**Warning:** {w}.\n" for w in fid["warnings"])
    (out / "leaderboard.md").write_text(md)
    figures = {"accuracy_vs_params.html": accuracy_vs(study, df, "params"),
               "accuracy_vs_macs.html": accuracy_vs(study, df, "macs"), "accuracy_vs_ram.html": accuracy_vs(study, df, "ram"),
               "budget_check.html": budget_check(study)}  # fmt: skip
    for measure in ("macs", "ram"):
        if measure in limits(study):
            figures[f"{measure}_check.html"] = budget_check(study, measure)
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        figures["history.html"] = plot_optimization_history(study, target_name=METRIC)
        figures["intermediate.html"] = plot_intermediate_values(study)
    imp, why = importances(study)
    if imp:
        figures["importances.html"] = importance_figure(study, imp)
    else:
        skipped["importances"] = why
    for name, fig in figures.items():
        fig.write_html(out / name, include_plotlyjs="directory")  # one plotly.min.js beside them, works offline
    write_note(study)
    return {"dir": out, "leaderboard": df, "fidelity": fid, "control": control, "figures": sorted(figures),
            "importances": imp, "skipped": skipped}  # fmt: skip


# ------------------------------------------------------------------------------------ dashboard note


def note(study: optuna.Study) -> str:
    """The study's Markdown note: what was searched, how the budget check went, the best trials,
    the retrain results with links to their files, and the search space as YAML."""
    a = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    done = trained(trials)
    split = a.get("split", {})
    macs = f", at most **{a['max_macs']:,}** MACs per image" if a.get("max_macs") else ""
    macs += f", at most **{a['max_ram']:,}** bytes of peak activation memory (int8)" if a.get("max_ram") else ""
    lines = [
        f"## {study.study_name}",
        f"Budget **{a.get('budget', 0):,}** parameters{macs} · space `{a.get('space_path', '?')}` · data "
        f"`{a.get('dataset', '?')}`: {proxy_words(study, a.get('proxy_epochs', '?'))} (split seed {split.get('seed', '?')}).",
        "",
        f"{len(done)} trials trained ({sum(t.state == TrialState.PRUNED for t in done)} pruned by the pruner, "
        f"{sum(t.state == TrialState.FAIL for t in done)} failed); {rejected_words(trials)}.",
        "",
        "The dashboard lists a rejected proposal and a pruned training both as **Pruned**: a rejected one has no "
        "intermediate values, user attr `reason` `over_budget` (or `over_macs`, `over_ram`, `underfilled`, `invalid`) and a note that says "
        "so; the figure *Budget check* on the study page shows every proposal against the budget.",
    ]  # fmt: skip
    best = sorted((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:5]
    if best:
        lines += ["", f"### Best trials ({METRIC})", "", "| trial | val acc | params | architecture | recipe |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t.number} | {t.value:.4f} | {t.user_attrs['params']:,} | {arch_brief(t)} | {recipe_brief(t)} |"
                  for t in best]  # fmt: skip
    done_retrains = retrains(study)
    if done_retrains:
        lines += ["", "### Retrained in full (official test set)", "",
                  "| name | test acc | flip-TTA | epochs | params | proxy val | files |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in sorted(done_retrains.items(), key=lambda kv: -kv[1]["retrain_test_acc"]):
            proxy = f"{r['proxy_val_acc']:.4f}" if r.get("proxy_val_acc") is not None else ""
            lines.append(f"| {name} | {r['retrain_test_acc']:.4f} | {r['retrain_test_acc_tta']:.4f} | "
                         f"{r['retrain_epochs']} | {r['params']:,} | {proxy} | {_links(study, r)} |")  # fmt: skip
        control = against_control(leaderboard(study), f" --study {study.study_name}")
        lines += ["", control] if control else []
        lines.append("\nThe files open from the dashboard when it runs with `--artifact-dir` "
                     f"`{artifact_dir(study.study_name)}`.")  # fmt: skip
    space = study_space(study)
    if space:
        lines += ["", "### Search space", "", "```yaml", space.rstrip("\n"), "```"]
    lines.append(f"\n_Written by nas {__version__}; `nas report` refreshes it._")
    return "\n".join(lines)


def _links(study: optuna.Study, r: dict[str, Any]) -> str:
    """Markdown links to a retrain's files, served by optuna-dashboard from its artifact store."""
    try:
        from optuna_dashboard.artifact import get_artifact_path
    except ImportError:
        return ""
    return " · ".join(f"[{f}]({get_artifact_path(study, i)})" for f, i in r.get("artifacts", {}).items())


def trial_note(study: optuna.Study, r: dict[str, Any]) -> str:
    said = describe(r)
    return (f"### Retrained in full\n{said[0].upper() + said[1:]} in {r['retrain_seconds']:.0f} s on {r['device']} "
            f"(seed {r['seed']}).\n\nFiles: {_links(study, r)}\n\nAlso in `{r['dir']}`.")  # fmt: skip


def write_note(study: optuna.Study) -> bool:
    """Save the study note, a note on each retrained trial and the study-page figures, where
    optuna-dashboard is installed (`pip install -e .[dashboard]`); returns whether it could."""
    try:
        from optuna_dashboard import save_note, save_plotly_graph_object
    except ImportError:
        return False
    save_note(study, note(study))
    trials = study.get_trials(deepcopy=False)
    by_trial: dict[int, list[dict[str, Any]]] = {}  # a trial's retrains, one per seed
    for name, r in retrains(study).items():
        if name.startswith("trial-"):
            by_trial.setdefault(int(base_name(name).split("-", 1)[1]), []).append(r)
    for number, runs in by_trial.items():
        stored = StoredTrial.of(study, trials[number])
        trial = optuna.Trial(study, stored.trial_id)  # notes live on the study
        save_note(trial, "\n\n".join(trial_note(study, r) for r in sorted(runs, key=lambda r: r["seed"])))
    # A fixed id: each save replaces the figure instead of adding another.
    df = leaderboard(study)
    save_plotly_graph_object(study, budget_check(study), graph_object_id="nas-budget-check")
    save_plotly_graph_object(study, accuracy_vs(study, df), graph_object_id="nas-accuracy")
    for measure in ("macs", "ram"):
        if measure in limits(study):
            save_plotly_graph_object(study, budget_check(study, measure), graph_object_id=f"nas-{measure}-check")
            save_plotly_graph_object(study, accuracy_vs(study, df, measure), graph_object_id=f"nas-accuracy-{measure}")
    return True

