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
from nas.score import DESCRIPTIONS, is_accuracy, metric_name
from nas.study import (FILL_MIN, StoredTrial, artifact_dir, cut_short, repeat, study_flags, study_home, study_metric,
                       study_score, study_space, study_system_attrs, study_url, trial_arch, trial_recipe, trial_seconds)  # fmt: skip

COLUMNS = ["name", "trial", "state", "proxy", "proxy_epochs", "params", "macs", "ram", "retrain_test_acc",
           "retrain_test_acc_tta", "retrain_epochs", "proxy_seconds", "arch", "recipe", "reason"]  # fmt: skip
STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2}  # a pruned score is from fewer epochs: below every complete one
MIN_IMPORTANCE_TRIALS = 8
MIN_FIDELITY_TRIALS = 3


def leaderboard(study: optuna.Study):
    """One row per trained trial and per retrained preset: retrained ones first by test accuracy,
    then complete trials by proxy score, then pruned ones (scored after fewer epochs), then failed ones,
    those cut short (interrupted, a dead worker, an error) included, each with its reason. Column
    `proxy` is the study's objective (`study_metric`), the name the written files give it."""
    import pandas as pd

    done = retrains(study)
    proxy_epochs = study.user_attrs.get("proxy_epochs")
    rows = []
    trials = study.get_trials(deepcopy=False)
    for t in trained(trials) + [t for t in trials if cut_short(t) and "params" in t.user_attrs]:
        a, r = t.user_attrs, done.get(f"trial-{t.number}", {})
        last = max(t.intermediate_values, default=None)
        rows.append({"name": f"trial-{t.number}", "trial": t.number, "state": _state(t),
                     "proxy": t.value if t.state == TrialState.COMPLETE else _last(t),
                     "proxy_epochs": proxy_epochs if t.state == TrialState.COMPLETE else last,
                     "params": a["params"], "macs": a["macs"], "ram": _ram(trial_arch(t)), **_retrain_columns(r),
                     "proxy_seconds": trial_seconds(t), "arch": arch_brief(t), "recipe": recipe_brief(t),
                     "reason": a.get("reason") if t.state == TrialState.FAIL else None})  # fmt: skip
    for name, r in done.items():
        if name.startswith("trial-") and base_name(name) != name:  # another seed of a retrained trial
            rows.append({"name": name, "trial": int(base_name(name).split("-")[1]), "state": "seed",
                         "proxy": None, "proxy_epochs": None, "params": r["params"], "macs": r["macs"],
                         **_retrain_columns(r), "proxy_seconds": None, "arch": ArchSpec.from_dict(r["spec"]).describe(),
                         "recipe": Recipe.from_dict(r["recipe"]).describe()})  # fmt: skip
        if name.startswith("preset-"):
            size = {"params": r["params"], "macs": r["macs"], "ram": _ram(r["spec"])}
            over = any(size[measure] > limit for measure, limit in limits(study).items())  # any limit
            rows.append({"name": name, "trial": None, "state": "over budget" if over else "preset",
                         "proxy": None, "proxy_epochs": None, **size,
                         **_retrain_columns(r), "proxy_seconds": None, "arch": ArchSpec.from_dict(r["spec"]).describe(),
                         "recipe": Recipe.from_dict(r["recipe"]).describe(), "reason": None})  # fmt: skip
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("trial", "proxy_epochs", "retrain_epochs"):
        df[col] = df[col].astype("Int64")
    for col in ("proxy", "retrain_test_acc", "retrain_test_acc_tta", "proxy_seconds"):
        df[col] = df[col].astype(float)  # None -> NaN: sortable, and blank in the printed table
    df["_rank"] = df["state"].map(STATE_ORDER).fillna(0)
    df = df.sort_values(["retrain_test_acc", "_rank", "proxy"], ascending=[False, True, False],
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
    """A pruned trial's score: the last it reported (the pruner's signal: the objective so far)."""
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def fidelity(df, flags: str = "") -> dict[str, Any] | None:
    """Rank correlation between proxy score and retrain accuracy over retrained complete trials (>= 3),
    with the baseline a proxy must beat to be worth its training: the parameter count alone. `flags`
    (' --study X') go into the commands it suggests."""
    both = df[(df["state"] == "complete")].dropna(subset=["proxy", "retrain_test_acc"])
    if len(both) < MIN_FIDELITY_TRIALS:
        return None
    corr = both[["proxy", "params", "retrain_test_acc"]].astype(float).corr
    kendall, spearman = corr(method="kendall")["retrain_test_acc"], corr(method="spearman")["retrain_test_acc"]
    lengths = sorted(int(n) for n in both["retrain_epochs"].dropna().unique())
    warnings = []
    if len(lengths) > 1:
        warnings.append(f"the retrains differ in length ({', '.join(map(str, lengths))} epochs): longer ones score "
                        f"higher whatever their proxy said; retrain them alike (nas retrain --trial N --epochs E --replace{flags})")  # fmt: skip
    if kendall["params"] > kendall["proxy"]:
        warnings.append(f"the parameter count alone ranks these retrains better than the proxy does (Kendall tau "
                        f"{kendall['params']:.3f} against {kendall['proxy']:.3f}): retrain the largest trials "
                        f"too, not only the proxy's best; fill the budget (--fill-budget), and try a longer proxy "
                        f"(--proxy-epochs, --proxy-subset) or another --score")  # fmt: skip
    return {"trials": len(both), "kendall_tau": float(kendall["proxy"]), "spearman": float(spearman["proxy"]),
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
    lengths = sorted(int(n) for n in retrained["retrain_epochs"].dropna().unique())
    caveat = ("" if s_n > 1 and h_n > 1 else "; one seed: not yet set against the seed spread") + (
        f"; the retrains differ in length ({', '.join(map(str, lengths))} epochs)" if len(lengths) > 1 else "")
    if h_acc >= s_acc:
        return (f"A hand design scaled to the budget matches or beats the search: {both}{caveat}. The search has "
                f"not yet found anything a scaled hand design does not.")  # fmt: skip
    return f"The search's best beats the best hand design scaled to the budget by {100 * (s_acc - h_acc):.2f} points: {both}{caveat}."


def fidelity_line(fid: dict[str, Any]) -> str:
    params = fid["params_kendall_tau"]
    baseline = "undefined (the retrained trials have one size)" if math.isnan(params) else f"{params:.3f}"
    return (f"Kendall tau {fid['kendall_tau']:.3f}, Spearman {fid['spearman']:.3f}; "
            f"the parameter count alone: Kendall tau {baseline}")  # fmt: skip


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
    """The leaderboard for a terminal `width` columns wide: params and MACs in k/M, the columns no row
    fills dropped, then the optional ones (MACs first) until the architecture has room, the
    architecture cut to fit. A failed trial's state is its reason (oom, interrupted...)."""
    import pandas as pd

    def num(v: Any, fmt) -> str:
        return "" if pd.isna(v) else fmt(v)

    columns = {  # header -> cell; in order of display
        "name": lambda r: r.name, "state": lambda r: r.reason if r.state == "failed" and isinstance(r.reason, str) else r.state,
        "proxy": lambda r: num(r.proxy, "{:.4f}".format), "ep": lambda r: num(r.proxy_epochs, str),
        "params": lambda r: fmt_params(r.params), "MACs": lambda r: f"{r.macs / 1e6:,.1f}M",
        "test": lambda r: num(r.retrain_test_acc, "{:.4f}".format),
        "TTA": lambda r: num(r.retrain_test_acc_tta, "{:.4f}".format),
        "epochs": lambda r: num(r.retrain_epochs, str), "time": lambda r: num(r.proxy_seconds, fmt_seconds),
    }
    rows = list(df.itertuples(index=False))
    cells = {h: [f(r) for r in rows] for h, f in columns.items()}
    widths = {h: max([len(h), *map(len, cells[h])]) for h in cells if h in ("name", "state") or any(cells[h])}
    for optional in (h for h in ("MACs", "TTA", "time", "epochs") if h in widths):
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


def legend(shown: list[str], score: str) -> str:
    """What the printed columns mean, for those `shown`, in a study searched with `score`."""
    words = {"proxy": f"{metric_name(score)}, {DESCRIPTIONS[score]}", "ep": "the epochs it ran (fewer if pruned)",
             "test": "retrain test accuracy",
             "TTA": "the same with flip-TTA", "epochs": "of the retrain", "time": "of the proxy training"}  # fmt: skip
    return "; ".join(f"{h}: {w}" for h, w in words.items() if h in shown) + "."


# -------------------------------------------------------------------------------------------- figures


# One colour per kind of thing, in every figure of every study: a pruned trial is orange everywhere.
COLORS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "pareto": "#2ca02c", "retrain": "#d62728", "preset": "#9467bd",
          "failed": "#7f7f7f", "running": "#17becf", "over_budget": "#8c564b", "over_macs": "#e377c2",
          "over_ram": "#393b79", "underfilled": "#bcbd22", "repeat": "#c7c7c7"}  # fmt: skip
MARGIN = {"t": 90}  # the title and plotly's toolbar above the plot, not over its values


def short_number(v: float) -> str:
    """20000 -> '20k', 1500000 -> '1.5M': a tick label."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


def log_ticks(lo: float, hi: float) -> dict[str, Any]:
    """Ticks of a log axis from lo to hi that stay apart at half a page's width: 1-2-5 steps, powers of
    ten alone over many decades, a few round numbers where the range is narrower than one step
    (plotly's own labels every 1-9 x 10^k and piles them up: '90k 80k 70k 60k')."""
    lo, hi = max(lo, 1e-9), max(hi, lo * 1.0001)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    vals = [m * 10**e for e in decades for m in (1, 2, 5) if lo <= m * 10**e <= hi]
    if len(vals) > 7:
        vals = [v for v in vals if str(int(v)).startswith("1") or v < 1]
    if len(vals) < 3:  # under a 1-2-5 step: round numbers about a quarter of the range apart
        step = 10 ** math.floor(math.log10((hi - lo) / 3)) if hi > lo else 10 ** math.floor(math.log10(lo))
        step *= 5 if (hi - lo) / step > 15 else 2 if (hi - lo) / step > 6 else 1
        vals = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    return {"type": "log", "tickvals": vals, "ticktext": [short_number(v) for v in vals]}


# What each measure is called on an axis, the study attr holding its limit, and that limit's name.
MEASURES = {"params": ("parameters", "budget", "budget"), "macs": ("MACs per image", "max_macs", "MAC limit"),
            "ram": ("peak activation bytes (int8)", "max_ram", "RAM limit")}  # fmt: skip


def limits(study: optuna.Study) -> dict[str, int]:
    """The limits a study was searched under: {"params": budget, "macs": max_macs, "ram": max_ram} where set."""
    return {m: study.user_attrs[attr] for m, (_, attr, _) in MEASURES.items() if study.user_attrs.get(attr)}


def accuracy_vs(study: optuna.Study, df, measure: str = "params"):
    """Proxy accuracy against parameters or MACs (log axis: a preset far over the limit would
    squash the rest), the limit line, the Pareto front of complete trials (most accurate for its
    size or cost), pruned trials apart (scored after fewer epochs), and the retrain accuracies: a
    star per retrained trial and a diamond per preset, one legend entry per retrain length (a
    1-epoch retrain is not a 30-epoch one)."""
    import plotly.graph_objects as go

    axis, _, limit_name = MEASURES[measure]
    limit = limits(study).get(measure)
    metric, accuracy = study_metric(study), is_accuracy(study_score(study))
    proxy_axis = {} if accuracy else {"yaxis": "y2"}  # a score that is no accuracy gets an axis of its own
    scored = df.dropna(subset=["proxy"]).sort_values(measure)
    complete, pruned = scored[scored["state"] == "complete"], scored[scored["state"] != "complete"]
    hover = "%{text}<br>%{x:,} " + axis + "<br>%{y:.4f}<extra></extra>"
    fig = go.Figure()
    fig.add_scatter(x=complete[measure], y=complete["proxy"], mode="markers", name=f"{metric} (complete)",
                    marker_color=COLORS["complete"], text=complete["name"] + ": " + complete["arch"],
                    hovertemplate=hover, **proxy_axis)  # fmt: skip
    if len(pruned):
        fig.add_scatter(x=pruned[measure], y=pruned["proxy"], mode="markers", marker_color=COLORS["pruned"],
                        name="pruned (score when stopped)",
                        text=pruned["name"] + " after epoch " + pruned["proxy_epochs"].astype(str) + ": " + pruned["arch"],
                        hovertemplate=hover, **proxy_axis)  # fmt: skip
    front, best = [], -math.inf
    for x, y in zip(complete[measure], complete["proxy"]):
        if y > best:
            front.append((x, y))
            best = y
    fig.add_scatter(x=[x for x, _ in front], y=[y for _, y in front], mode="lines+markers", line_shape="hv",
                    marker_color=COLORS["pareto"], line_color=COLORS["pareto"], name="Pareto front", **proxy_axis)  # fmt: skip
    retrained = df.dropna(subset=["retrain_test_acc"])
    for (is_preset, epochs), group in retrained.groupby([retrained["name"].str.startswith("preset-"), "retrain_epochs"]):
        names = [n + (" (over budget)" if s == "over budget" else "") for n, s in zip(group["name"], group["state"])]
        fig.add_scatter(x=group[measure], y=group["retrain_test_acc"], mode="markers",
                        name=f"{'preset' if is_preset else 'retrain'} test acc, {epochs} epoch{'s' * (epochs != 1)}",
                        marker={"symbol": "diamond" if is_preset else "star", "size": 9 + min(int(epochs), 30) // 3,
                                "color": COLORS["preset" if is_preset else "retrain"], "line": {"width": 1, "color": "white"}},
                        text=names, hovertemplate=hover)  # fmt: skip
    if limit:
        ys = [*(df["proxy"].dropna() if accuracy else []), *df["retrain_test_acc"].dropna()]
        ys = ys if len(set(ys)) > 1 else [0.0, 1.0]  # a line of no length would not show
        fig.add_scatter(x=[limit, limit], y=[min(ys), max(ys)], mode="lines", line={"dash": "dash", "color": "black"},
                        name=f"{limit_name} {limit:,}", hoverinfo="skip")  # fmt: skip
    fig.update_layout(title=f"{study.study_name}: accuracy vs {axis}", xaxis_title=f"{axis} (log scale)",
                      yaxis_title="accuracy", margin=MARGIN)  # fmt: skip
    if not accuracy:
        fig.update_layout(yaxis2={"title": metric, "overlaying": "y", "side": "right", "showgrid": False},
                          legend={"x": 1.08})  # fmt: skip
    xs = [*scored[measure], *retrained[measure], *([limit] if limit else [])]
    if xs:  # padded: autorange puts the limit, usually the largest x, on the axis frame, where it is lost
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        pad = 0.05 * (hi - lo) or 0.1
        fig.update_xaxes(range=[lo - pad, hi + pad], **log_ticks(10 ** (lo - pad), 10 ** (hi + pad)))  # range in log10 units
    else:
        fig.update_xaxes(type="log")
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
    colors = {"trained": COLORS["complete"], "pruned": COLORS["pruned"], **{KINDS[k]: COLORS[k] for k in KINDS},
              "failed": COLORS["failed"], "running": COLORS["running"]}  # fmt: skip
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
    ys = [t.user_attrs[measure] for ts in groups.values() for t in ts] + ([limit] if limit else [])
    fig.update_layout(title=what, xaxis_title="trial", yaxis_title=f"{axis} (log scale)", margin=MARGIN,
                      yaxis=log_ticks(min(ys) / 1.2, max(ys) * 1.2) if ys else {"type": "log"})  # fmt: skip
    if ys:
        fig.update_yaxes(range=[math.log10(min(ys) / 1.2), math.log10(max(ys) * 1.2)])
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


IMPORTANCE_WHY = ("of features every trained trial has (depth, widths, parameters, MACs, the recipe); the dashboard's "
                  "own chart ranks only the sampled parameters present in every complete trial, so per-stage ones drop "
                  "out there and the two rankings differ")  # fmt: skip


def importance_figure(study: optuna.Study, imp: dict[str, float]):
    import plotly.graph_objects as go

    names = list(reversed(list(imp)))
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h", marker_color=COLORS["complete"]))
    fig.update_layout(title=f"{study.study_name}: what mattered for {study_metric(study)} (PED-ANOVA over derived features)",
                      xaxis_title="importance", height=300 + 20 * len(names), margin=MARGIN)  # fmt: skip
    return fig


def proxy_curves(study: optuna.Study):
    """Each trained trial's score per proxy epoch (what the pruner saw), coloured by how it ended."""
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    for t in trained(study.get_trials(deepcopy=False)):
        if not t.intermediate_values:
            continue
        kind = _state(t)
        steps = sorted(t.intermediate_values)
        fig.add_scatter(x=steps, y=[t.intermediate_values[e] for e in steps], mode="lines+markers", name=kind,
                        legendgroup=kind, showlegend=kind not in shown, line_color=COLORS[kind], opacity=0.7,
                        text=[f"#{t.number}"] * len(steps), hovertemplate="%{text}, epoch %{x}: %{y:.4f}<extra></extra>")  # fmt: skip
        shown.add(kind)
    metric = study_metric(study)
    fig.update_layout(title=f"{study.study_name}: the proxy trainings, {metric} per epoch", xaxis_title="proxy epoch",
                      yaxis_title=metric, legend_title="how it ended", margin=MARGIN, xaxis={"dtick": 1})  # fmt: skip
    return fig


def fidelity_figure(study: optuna.Study, df, fid: dict[str, Any]):
    """Proxy score against retrain accuracy for the retrained complete trials, coloured by parameters
    (the baseline the proxy must beat): the picture behind the rank correlations."""
    import plotly.graph_objects as go

    both = df[df["state"] == "complete"].dropna(subset=["proxy", "retrain_test_acc"])
    ticks = log_ticks(both["params"].min(), both["params"].max())  # the colour is log10(params)
    fig = go.Figure(go.Scatter(
        x=both["proxy"], y=both["retrain_test_acc"], mode="markers+text", text=both["name"].str.removeprefix("trial-"),
        textposition="top center", customdata=both[["params", "retrain_epochs"]].astype(float).values,
        marker={"size": 12, "color": [math.log10(v) for v in both["params"]], "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": "params", "tickvals": [math.log10(v) for v in ticks["tickvals"]],
                             "ticktext": ticks["ticktext"]}},
        hovertemplate="trial %{text}<br>proxy %{x:.4f}<br>retrain %{y:.4f} after %{customdata[1]} epochs"
                      "<br>%{customdata[0]:,} params<extra></extra>"))  # fmt: skip
    fig.update_layout(title=f"{study.study_name}: proxy score vs retrain accuracy<br><sup>{fidelity_line(fid)}</sup>",
                      margin=MARGIN,
                      xaxis_title=f"{study_metric(study)} (proxy)", yaxis_title="retrain test accuracy")  # fmt: skip
    return fig


def retrain_curves(study: optuna.Study):
    """Every retrain's test accuracy and learning rate per epoch, from the history.csv files kept here;
    None where none is."""
    import pandas as pd
    import plotly.colors
    from plotly.subplots import make_subplots

    from nas.retrain import kept_file

    palette = plotly.colors.qualitative.D3  # one colour per retrain, the same in both panels

    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "learning rate"))
    found = 0
    for name, r in sorted(retrains(study).items(), key=lambda kv: -kv[1]["retrain_test_acc"]):
        path = kept_file(study, name, "history.csv")
        if path is None:
            continue
        h = pd.read_csv(path)
        label = f"{name}: {r['retrain_test_acc']:.4f} after {r['retrain_epochs']} ep"
        color = COLORS["preset"] if name.startswith("preset-") else palette[found % len(palette)]
        scored = h.dropna(subset=["test_acc"])
        fig.add_scatter(x=scored["epoch"], y=scored["test_acc"], mode="lines+markers", name=label, legendgroup=name,
                        line_color=color, row=1, col=1)  # fmt: skip
        if "lr" in h:
            fig.add_scatter(x=h["epoch"], y=h["lr"], mode="lines", name=label, legendgroup=name, showlegend=False,
                            line_color=color, row=1, col=2)  # fmt: skip
        found += 1
    if not found:
        return None
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=f"{study.study_name}: the retrains", legend_title="retrain: final test accuracy",
                      margin=MARGIN)  # fmt: skip
    return fig


def report(study: optuna.Study, out: Path | None = None) -> dict[str, Any]:
    """Write leaderboard.csv/.md and the figures to `out` (default: the study's folder beside its
    storage, `report/`); returns them with the fidelity and, for what was left out, why. It only
    reads the study: the dashboard note is `write_note`'s, which `nas report --note` calls."""
    from optuna.visualization import plot_optimization_history

    flags = study_flags(study.study_name, study_url(study))
    out = out or study_home(study.study_name, study_url(study)) / "report"
    out.mkdir(parents=True, exist_ok=True)
    df, metric = leaderboard(study), study_metric(study)
    named = df.rename(columns={"proxy": metric})  # the files name the objective
    named.to_csv(out / "leaderboard.csv", index=False)
    fid, skipped = fidelity(df, flags), {}
    if not fid:
        n = int(((df["state"] == "complete") & df["retrain_test_acc"].notna()).sum())
        skipped["proxy fidelity"] = (f"{n} retrained complete trial{'s' * (n != 1)}, {MIN_FIDELITY_TRIALS} needed; "
                                     f"retrain the best: nas retrain --top {MIN_FIDELITY_TRIALS}{flags}")  # fmt: skip
    md = f"# {study.study_name}\n\n" + markdown_table(named)
    control = against_control(df, flags)
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
        history = plot_optimization_history(study, target_name=metric)
        history.update_layout(title=f"{study.study_name}: {metric} by trial, and the best so far", margin=MARGIN)
        figures["history.html"] = history
        figures["intermediate.html"] = proxy_curves(study)
    imp, why = importances(study)
    if imp:
        figures["importances.html"] = importance_figure(study, imp)
    else:
        skipped["importances"] = why
    if fid:
        figures["fidelity.html"] = fidelity_figure(study, df, fid)
    curves = retrain_curves(study)
    if curves:
        figures["retrains.html"] = curves
    elif retrains(study):
        skipped["retrain curves"] = "no retrain's history.csv is kept here"
    for name, fig in figures.items():  # one plotly.min.js beside them, works offline; the toolbar only on hover
        fig.write_html(out / name, include_plotlyjs="directory", config={"displaylogo": False})
    (out / "index.html").write_text(index_page(study, named, fid, skipped, sorted(figures)))
    return {"dir": out, "leaderboard": df, "fidelity": fid, "control": control, "figures": sorted(figures),
            "importances": imp, "skipped": skipped}  # fmt: skip


PAGES = {"accuracy_vs_params.html": "proxy and retrain accuracy against parameters, the budget, the Pareto front",
         "accuracy_vs_macs.html": "the same against MACs per image",
         "accuracy_vs_ram.html": "the same against peak activation memory (int8 bytes)",
         "budget_check.html": "every proposal's parameters against the budget, by what became of it",
         "macs_check.html": "every proposal's MACs against the MAC limit",
         "ram_check.html": "every proposal's peak activation memory against the RAM limit",
         "history.html": "the objective by trial number and the best so far",
         "intermediate.html": "each proxy training's score per epoch",
         "importances.html": "what mattered, " + IMPORTANCE_WHY,
         "fidelity.html": "proxy score against retrain accuracy, coloured by parameters",
         "retrains.html": "each retrain's test accuracy and learning rate per epoch"}  # fmt: skip


def index_page(study: optuna.Study, df, fid: dict[str, Any] | None, skipped: dict[str, str], figures: list[str]) -> str:
    """The report's front page: what each figure shows, the fidelity, what was left out and why, the leaderboard."""
    import html

    items = "".join(f'<li><a href="{f}">{f.removesuffix(".html").replace("_", " ")}</a>: {html.escape(PAGES[f])}</li>'
                    for f in PAGES if f in figures)  # fmt: skip
    said = [f"Proxy fidelity over {fid['trials']} retrained trials: {fidelity_line(fid)}."] if fid else []
    said += [f"Warning: {w}." for w in (fid or {}).get("warnings", [])]
    said += [f"No {what}: {why}." for what, why in skipped.items()]
    shown = df[["name", "state", "reason", *[c for c in df.columns if c not in ("name", "state", "reason", "trial")]]]
    table = shown.astype(object).where(shown.notna(), "").to_html(index=False, float_format="{:.4f}".format, border=0)
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(study.study_name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right;white-space:nowrap}"
            "td:nth-last-child(-n+2),th:nth-last-child(-n+2),td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}tr:nth-child(even){background:#f4f4f4}</style>"
            f"<h1>{html.escape(study.study_name)}</h1><ul>{items}</ul>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in said)
            + '<h2>Leaderboard</h2><p><a href="leaderboard.csv">leaderboard.csv</a> (every column) · '
            f'<a href="leaderboard.md">leaderboard.md</a></p>{table}')  # fmt: skip


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
    metric = study_metric(study)
    if best:
        lines += ["", f"### Best trials ({metric})", "", f"| trial | {metric} | params | architecture | recipe |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t.number} | {t.value:.4f} | {t.user_attrs['params']:,} | {arch_brief(t)} | {recipe_brief(t)} |"
                  for t in best]  # fmt: skip
    done_retrains = retrains(study)
    if done_retrains:
        lines += ["", "### Retrained in full (official test set)", "",
                  f"| name | test acc | flip-TTA | epochs | params | {metric} | files |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in sorted(done_retrains.items(), key=lambda kv: -kv[1]["retrain_test_acc"]):
            proxy = f"{r[metric]:.4f}" if r.get(metric) is not None else ""
            lines.append(f"| {name} | {r['retrain_test_acc']:.4f} | {r['retrain_test_acc_tta']:.4f} | "
                         f"{r['retrain_epochs']} | {r['params']:,} | {proxy} | {_links(study, r)} |")  # fmt: skip
        control = against_control(leaderboard(study), study_flags(study.study_name, study_url(study)))
        lines += ["", control] if control else []
        lines.append("\nThe files open from the dashboard when it runs with `--artifact-dir` "
                     f"`{artifact_dir(study.study_name, study_url(study))}`, the folder beside the study's storage "
                     "that holds them; a file not kept there is said so.")  # fmt: skip
    space = study_space(study)
    if space:
        lines += ["", "### Search space", "", "```yaml", space.rstrip("\n"), "```"]
    lines.append(f"\n_Written by nas {__version__}; `nas search`, `nas retrain` and `nas report --note` refresh it._")
    return "\n".join(lines)


def _links(study: optuna.Study, r: dict[str, Any]) -> str:
    """Markdown links to a retrain's files, served by optuna-dashboard from the artifact folder beside
    the study's storage; a file not in that folder (a study handed on without it) is named, unlinked."""
    try:
        from optuna_dashboard.artifact import get_artifact_path
    except ImportError:
        return ""
    where = artifact_dir(study.study_name, study_url(study))
    files = r.get("artifacts", {})
    kept = [f"[{f}]({get_artifact_path(study, i)})" for f, i in files.items() if (where / i).is_file()]
    lost = [f for f, i in files.items() if not (where / i).is_file()]
    return " · ".join(kept + ([f"not kept with the study: {', '.join(lost)}"] if lost else []))


def trial_note(study: optuna.Study, r: dict[str, Any]) -> str:
    said = describe(r)
    folder = f"\n\nAlso in `{r['dir']}`." if Path(r["dir"]).is_dir() else ""
    return (f"### Retrained in full\n{said[0].upper() + said[1:]} in {r['retrain_seconds']:.0f} s on {r['device']} "
            f"(seed {r['seed']}).\n\nFiles: {_links(study, r)}{folder}")  # fmt: skip


RETRAINED = "### Retrained in full"  # where a trial note's retrain part starts; what the search said comes before


def write_note(study: optuna.Study) -> bool:
    """Save the study note, a note on each retrained trial (after what the search said of it: a pruned
    trial stays pruned) and the study-page figures, where optuna-dashboard is installed (`pip install
    -e .[dashboard]`); returns whether it could. Only what changed is written: each save appends to a
    journal, and a study that did not change must stay byte for byte what it was."""
    try:
        from optuna_dashboard import get_note, save_note
    except ImportError:
        return False
    if get_note(study) != (text := note(study)):
        save_note(study, text)
    trials = study.get_trials(deepcopy=False)
    by_trial: dict[int, list[dict[str, Any]]] = {}  # a trial's retrains, one per seed
    for name, r in retrains(study).items():
        if name.startswith("trial-"):
            by_trial.setdefault(int(base_name(name).split("-", 1)[1]), []).append(r)
    for number, runs in by_trial.items():
        stored = StoredTrial.of(study, trials[number])
        trial = optuna.Trial(study, stored.trial_id)  # notes live on the study
        before = get_note(trial).split(RETRAINED)[0].rstrip()
        text = (before + "\n\n" if before else "") + "\n\n".join(trial_note(study, r) for r in
                                                               sorted(runs, key=lambda r: r["seed"]))  # fmt: skip
        if get_note(trial) != text:
            save_note(trial, text)
    df = leaderboard(study)
    _save_figure(study, budget_check(study), "nas-budget-check")
    _save_figure(study, accuracy_vs(study, df), "nas-accuracy")
    for measure in ("macs", "ram"):
        if measure in limits(study):
            _save_figure(study, budget_check(study, measure), f"nas-{measure}-check")
            _save_figure(study, accuracy_vs(study, df, measure), f"nas-accuracy-{measure}")
    return True


def _save_figure(study: optuna.Study, fig, graph_id: str) -> None:
    """A figure on the dashboard's study page under a fixed id (each save replaces it), saved only if
    it differs from the one stored."""
    from optuna_dashboard import save_plotly_graph_object
    from optuna_dashboard._custom_plot_data import SYSTEM_ATTR_PLOT_DATA

    prefix = f"{SYSTEM_ATTR_PLOT_DATA}{graph_id}:"
    stored = study_system_attrs(study)
    parts = sorted((int(k.removeprefix(prefix)), v) for k, v in stored.items() if k.startswith(prefix))
    if "".join(v for _, v in parts) != fig.to_json():
        save_plotly_graph_object(study, fig, graph_object_id=graph_id)
