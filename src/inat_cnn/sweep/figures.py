"""Sweep figures: metric against creation order, parallel coordinates, parameter importance, trial curves."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..core.outputs import IMPORTANCE_PNG, METRIC_VS_CREATED_PNG, PARALLEL_COORDINATES_PNG, TRIAL_CURVES_PNG
from .importance import Column, hashable, value_label
from .metric import metric_label
from .ranking import Ranking
from .results import Experiment


def _created(exps: Sequence[Experiment]) -> list[Any]:
    try:
        return [datetime.fromisoformat(e.timestamp) for e in exps]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return list(range(1, len(exps) + 1))


def plot_metric_vs_created(exps: Sequence[Experiment], metric: str, higher_is_better: bool, out_path: Path) -> None:
    """The metric of each experiment against when DVC recorded it (a study's: against the trial
    number, the order Optuna created them in), with the best so far."""
    from matplotlib.figure import Figure

    from ..viz.canvas import save_png

    by_trial = all(e.trial is not None for e in exps)
    x = [e.trial.number for e in exps] if by_trial else _created(exps)
    y = [e.value for e in exps]
    best = list(itertools.accumulate(y, max if higher_is_better else min))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.step(x, best, where="post", color="tab:orange", alpha=0.8, label="best so far")
    ax.scatter(x, y, s=36, color="tab:blue", zorder=3, label="experiment")
    top = (max if higher_is_better else min)(range(len(y)), key=lambda i: y[i])
    ax.annotate(exps[top].name, (x[top], y[top]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if isinstance(x[0], datetime):
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_xlabel("created (experiment commit time)")
    else:
        ax.set_xlabel("trial number (creation order)" if by_trial else "experiment, in creation order")
    ax.set_ylabel(metric_label(metric))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    save_png(fig, out_path, f"{metric} v/s created ({len(exps)} experiments)")


def _axis(column: Column) -> tuple[np.ndarray, list[float], list[str]]:
    """Positions in [0, 1] of a parallel-coordinates axis, with its ticks and labels."""
    if column.kind != "numeric":
        levels = column.levels
        if column.kind == "categorical":
            levels = sorted(levels, key=str)
        else:
            levels = [False, True]
        spots = np.linspace(0.0, 1.0, len(levels)) if len(levels) > 1 else np.array([0.5])
        where = {hashable(level): spot for level, spot in zip(levels, spots)}
        return np.array([where[hashable(v)] for v in column.values]), list(spots), [value_label(v) for v in levels]
    values = np.asarray(column.values, dtype=float)
    lo, hi = values.min(), values.max()
    if hi == lo:  # a constant (the metric of a sweep that changed nothing): the middle
        return np.full(len(values), 0.5), [0.5], [f"{lo:.4g}"]
    log = lo > 0 and hi / lo >= 20
    f = np.log10 if log else (lambda v: v)
    span = f(hi) - f(lo)
    distinct = np.unique(values)
    ticks = distinct if len(distinct) <= 6 else np.array([lo, hi]) if log else np.linspace(lo, hi, 5)
    return (f(values) - f(lo)) / span, list((f(ticks) - f(lo)) / span), [f"{t:.4g}" for t in ticks]


def plot_parallel_coordinates(exps: Sequence[Experiment], columns: Sequence[Column], metric: str, out_path: Path) -> None:
    """One vertical axis per swept param and a last one for the metric; a line per experiment,
    coloured by the metric. Categorical params sit at evenly spaced, labelled positions; a numeric
    param spanning 20x or more (a learning rate) is on a log axis."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from ..viz.canvas import save_png

    y = np.array([e.value for e in exps], dtype=float)
    axes = [_axis(c) for c in columns] + [_axis(Column(metric, list(y)))]
    names = [c.key for c in columns] + [metric_label(metric)]
    pad = 0.0 if y.max() > y.min() else max(abs(y.min()) * 0.05, 0.01)  # a constant metric: one colour
    norm = Normalize(y.min() - pad, y.max() + pad)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(max(7.0, 1.7 * len(axes) + 1.5), 5.0))
    ax = fig.add_subplot()
    order = np.argsort(y)  # the best lines are drawn last, on top
    xs = np.arange(len(axes))
    for i in order:
        ax.plot(xs, [a[0][i] for a in axes], color=cmap(norm(y[i])), alpha=0.8, linewidth=1.6)
    for x, (_, ticks, labels) in zip(xs, axes):
        ax.axvline(x, color="black", linewidth=1.0)
        for tick, label in zip(ticks, labels):
            ax.plot([x - 0.03, x], [tick, tick], color="black", linewidth=1.0)
            ax.text(x - 0.05, tick, label, ha="right", va="center", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5})
    ax.set_xticks(xs, names, rotation=20 if len(axes) > 5 else 0, ha="right" if len(axes) > 5 else "center")
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(axes) - 0.8)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=names[-1], pad=0.02)
    save_png(fig, out_path, f"parallel coordinates ({len(exps)} experiments)")


def plot_importance(rows: Sequence[dict[str, Any]], metric: str, out_path: Path) -> None:
    """Two bar charts sharing the param axis: Optuna's fANOVA importance and Spearman correlation."""
    from matplotlib.figure import Figure

    from ..viz.canvas import save_png

    params = [r["param"] for r in rows][::-1]  # most important on top
    imp = [r["importance"] for r in rows][::-1]
    rho = [r["spearman"] if r["spearman"] is not None else 0.0 for r in rows][::-1]
    fig = Figure(figsize=(9, max(2.6, 1.2 + 0.45 * len(rows))))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(params, imp, color="tab:blue")
    left.set_xlabel("importance (Optuna fANOVA)")
    left.set_xlim(0, max(imp) * 1.1 if max(imp) > 0 else 1.0)  # all 0 when the metric is constant
    right.barh(params, rho, color=["tab:green" if r >= 0 else "tab:red" for r in rho])
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlim(-1.05, 1.05)
    right.set_xlabel("Spearman correlation")
    for i, r in enumerate(rows[::-1]):
        if r["spearman"] is None:
            right.text(0.02, i, "n/a", va="center", fontsize=8, color="grey")
    for a in (left, right):
        a.grid(axis="x", alpha=0.3)
    save_png(fig, out_path, f"parameter importance for {metric}")


def plot_trial_curves(trials: Sequence[Any], label: str, out_path: Path) -> None:
    """Every trial's reported value per epoch (its intermediate values): pruned trials in red,
    ending where the pruner stopped them, finished ones in blue."""
    from matplotlib.figure import Figure

    from ..viz.canvas import save_png

    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    shown = set()
    for t in trials:
        steps = sorted(t.intermediate_values)
        if not steps:
            continue
        pruned = t.state.name == "PRUNED"
        kind = "pruned" if pruned else t.state.name.lower()
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", markersize=3,
                color="tab:red" if pruned else "tab:blue", alpha=0.8, label=None if kind in shown else kind)
        shown.add(kind)
        if pruned:
            ax.annotate(f"t{t.number}", (steps[-1], t.intermediate_values[steps[-1]]), textcoords="offset points",
                        xytext=(4, -8), fontsize=8, color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(loc="best", fontsize=9)
    save_png(fig, out_path, f"{label} per epoch ({len(trials)} trials, {sum(t.state.name == 'PRUNED' for t in trials)} pruned)")


def write_figures(ranking: Ranking, columns: Sequence[Column], rows: list[dict[str, Any]], metric: str,
                  higher_is_better: bool, out_dir: Path) -> list[str]:
    """The report's figures in ``out_dir`` (made here); returns their file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_metric_vs_created(ranking.used, metric, higher_is_better, out_dir / METRIC_VS_CREATED_PNG)
    plot_parallel_coordinates(ranking.used, columns, metric, out_dir / PARALLEL_COORDINATES_PNG)
    figures = [METRIC_VS_CREATED_PNG, PARALLEL_COORDINATES_PNG]
    if rows:
        plot_importance(rows, metric, out_dir / IMPORTANCE_PNG)
        figures.append(IMPORTANCE_PNG)
    elif (out_dir / IMPORTANCE_PNG).exists():
        (out_dir / IMPORTANCE_PNG).unlink()  # a stale figure from an earlier, larger sweep
    if ranking.trials:
        plot_trial_curves(ranking.trials, metric_label(metric), out_dir / TRIAL_CURVES_PNG)
        figures.append(TRIAL_CURVES_PNG)
    return figures
