"""``reports/sweep.md`` and ``plots/sweep/``: the experiments ranked by a validation metric, the best
configuration and what to do with it (``dvc exp apply``, then ``dvc repro`` to measure it once on
the test set), the parameter-importance table and the figures. The test set ranks nothing here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.files import write_json, write_text
from .results import (
    available_metrics, importance, metric_label, metric_value, parse_exp_show, refuse_test_metric,
    reported_test_metric, swept_columns, value_label,
)
from .figures import plot_importance, plot_metric_vs_created, plot_parallel_coordinates, plot_trial_curves



# ---------------------------------------------------------------------------------- the report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value_label(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_report(
    exp_show_json: list,
    metric: str,
    out_dir: Path,
    report_md: Path,
    *,
    keys: Sequence[str] | None = None,
    higher_is_better: bool = True,
    top: int = 10,
    seed: int = 0,
    study: Any = None,
) -> dict[str, Any]:
    """Rank the finished experiments of ``dvc exp show --json`` by ``metric`` (FILE:KEY, a validation
    metric: one computed from the test split is a :class:`UserError`) and write
    ``out_dir``/{metric_vs_created,parallel_coordinates,importance}.png, importance.csv and
    ``report_md``. ``keys`` (a sweep's params) limits which params count as swept; otherwise
    every param that varies does. Returns the counts, the best experiment and the importance rows.

    Failed, queued and running experiments are skipped and counted, as are finished ones without
    the metric. Importance: Spearman's rank correlation of each swept param with the metric
    (categorical params coded by order of first appearance, so only its size means something
    there) and a seeded random forest's impurity importance on the params (categorical params
    one-hot, their columns' importances summed), like W&B's parameter-importance panel.

    An experiment that happens to carry the test accuracy of the same model (its evaluate stage
    ran) shows it in a column labelled as test accuracy; nothing is ranked or chosen by it.

    With an Optuna ``study``, only its trials' experiments count (matched by name), in trial
    order; pruned trials are counted and drawn (``trial_curves.png``, every trial's value per
    epoch) but not ranked, and the report adds the study's trial counts and the epochs spent.
    """
    refuse_test_metric(metric, "sweep report: metric")
    out_dir, report_md = Path(out_dir), Path(report_md)
    exps = parse_exp_show(exp_show_json)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    if study is not None:
        by_name = {t.user_attrs.get("dvc_exp"): t for t in trials}
        exps = [e for e in exps if e.name in by_name]
        for e in exps:
            e.trial = by_name[e.name]
    counts = {s: sum(e.status == s for e in exps) for s in ("success", "failed", "queued", "running")}
    pruned = [e for e in exps if e.status == "success" and e.trial is not None and e.trial.state.name == "PRUNED"]
    finished = [e for e in exps if e.status == "success" and e not in pruned]
    for e in finished:
        e.value = metric_value(e, metric)
    used = sorted((e for e in finished if e.value is not None),
                  key=lambda e: (e.trial.number, "") if e.trial is not None else (e.timestamp or "", e.name))
    without = [e for e in finished if e.value is None]
    if not used:
        if without:
            raise UserError(
                f"sweep report: none of the {len(without)} finished experiment(s) has {metric}; "
                f"metrics they have: {', '.join(available_metrics(without)) or 'none'}"
            )
        raise UserError(
            f"sweep report: no finished experiments; run dvc queue start "
            f"({counts['queued']} queued, {counts['running']} running, {counts['failed']} failed)"
        )
    ranked = sorted(used, key=lambda e: -e.value if higher_is_better else e.value)  # type: ignore[operator]
    best = ranked[0]
    columns = swept_columns(used, keys)
    rows: list[dict[str, Any]] = []
    if len(used) >= 2 and columns:
        rows = importance(columns, np.array([e.value for e in used], dtype=float), seed)
    elif len(used) < 2:
        note = "only 1 finished experiment: no parameter importance is possible"
    else:
        note = "no param varies across the finished experiments: nothing to rank"

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_metric_vs_created(used, metric, higher_is_better, out_dir / "metric_vs_created.png")
    plot_parallel_coordinates(used, columns, metric, out_dir / "parallel_coordinates.png")
    figures = ["metric_vs_created.png", "parallel_coordinates.png"]
    csv = ["param,kind,distinct_values,spearman,importance"]
    csv += [f"{r['param']},{r['kind']},{r['distinct_values']},{'' if r['spearman'] is None else r['spearman']},{r['importance']}" for r in rows]
    write_text(out_dir / "importance.csv", "\n".join(csv) + "\n")
    if rows:
        plot_importance(rows, metric, out_dir / "importance.png")
        figures.append("importance.png")
    elif (out_dir / "importance.png").exists():
        (out_dir / "importance.png").unlink()  # a stale figure from an earlier, larger sweep
    if trials:
        plot_trial_curves(trials, metric_label(metric), out_dir / "trial_curves.png")
        figures.append("trial_curves.png")

    swept = [c.key for c in columns]
    label = metric_label(metric)
    test_metric = reported_test_metric(metric)
    # an experiment's test accuracy only where every stage read the outputs the experiment wrote: a sweep
    # that stops at the training stage carries the baseline's metrics/evaluate_*.json along unchanged
    # (conservative: one stale stage downstream of the evaluation, such as compare, hides it too)
    tests = {e.name: None if e.stale_inputs else metric_value(e, test_metric) for e in used} if test_metric else {}
    if not any(v is not None for v in tests.values()):
        tests = {}
    failed = [e.name for e in exps if e.status == "failed"]
    md = [
        "# Sweep report",
        "",
        f"Ranked by {label} (`{metric}`, {'higher' if higher_is_better else 'lower'} is better). "
        "The test set ranks nothing here: it is measured once, on the chosen configuration.",
        "",
        f"Experiments: {len(used)} used, {counts['failed']} failed, {counts['queued']} queued, "
        f"{counts['running']} running" + (f", {len(without)} finished without the metric" if without else "") + ".",
    ]
    if failed:
        md += ["", "Failed (see `dvc queue logs NAME`): " + ", ".join(f"`{n}`" for n in failed)]
    study_facts = _study_facts(study, trials, exps) if study is not None else {}
    if study_facts:
        md += ["", f"## Study `{study.study_name}`", "", *study_facts["lines"]]
    ties = [e.name for e in ranked[1:] if e.value == best.value]
    tied = f" (tied with {', '.join(ties)}; the earliest is shown)" if ties else ""
    md += ["", f"## Best configuration (by {label})", "", f"**{best.name}**: {label} = {best.value:.4g}{tied}", ""]
    md += [_table(["param", "value"], [(k, best.params.get(k)) for k in swept]) if swept else "(no param varies)"]
    md += [
        "", "Next: bring its params and outputs into the workspace, then run the rest of the pipeline, which "
        "evaluates the chosen configuration once on the test set:", "",
        "```bash", f"dvc exp apply {best.name}", "dvc repro", "```",
    ]
    md += ["", f"## Top {min(top, len(ranked))} of {len(ranked)}", ""]
    test_header = ["test accuracy (not ranked)"] if tests else []
    md += [_table(["rank", "experiment", label, *test_header, *swept],
                  [(i, e.name, e.value, *([("" if tests.get(e.name) is None else tests[e.name])] if tests else []),
                    *(e.params.get(k) for k in swept))
                   for i, e in enumerate(ranked[:top], 1)])]
    if tests:
        md += ["", f"Test accuracy (`{test_metric}`) is shown where an experiment ran its evaluate stage; "
               f"the ranking and the best configuration come from {label} alone."]
    md += ["", "## Parameter importance", ""]
    if rows:
        md += [
            _table(["param", "kind", "values", "Spearman ρ", "importance (fANOVA)"],
                   [(r["param"], r["kind"], r["distinct_values"], "n/a" if r["spearman"] is None else f"{r['spearman']:+.3f}",
                     f"{r['importance']:.3f}")
                    for r in rows]),
            "",
            (
                f"Spearman ρ: rank correlation of the param with {label} (a categorical param is coded by "
                "order of first appearance, so only |ρ| means something there; n/a where the metric is constant). "
                "Importance: Optuna's fANOVA evaluator (the share of the metric's variance each param "
                "explains, from a seeded random forest over the finished trials); they add up to 1 (all 0 "
                "when the metric is constant)."
            ),
        ]
        if len({e.value for e in used}) == 1:
            md += ["", f"Every experiment has the same {label}: nothing can be attributed to a param."]
    else:
        md += [note + "."]
    rel = Path(os.path.relpath(out_dir, report_md.parent))
    md += ["", "## Figures", ""] + [f"![{name[:-4]}]({(rel / name).as_posix()})" for name in figures]
    write_text(report_md, "\n".join(md) + "\n")
    result = {
        "metric": metric,
        "label": label,
        "used": len(used),
        "failed": counts["failed"],
        "queued": counts["queued"],
        "running": counts["running"],
        "without_metric": len(without),
        "failed_names": failed,
        "best": {"name": best.name, "rev": best.rev, "value": best.value, "params": {k: best.params.get(k) for k in swept}},
        "swept": swept,
        "importance": rows,
        "figures": [str(out_dir / f) for f in figures],
        "report": str(report_md),
        "pruned": len(pruned),
        "study": study.study_name if study is not None else None,
        **{k: v for k, v in study_facts.items() if k != "lines"},
    }
    # the summary the pipeline's HTML report reads (its `report` stage depends on out_dir)
    write_json(out_dir / "summary.json", json.loads(json.dumps(result, default=_plain)))
    return result


def _plain(value: Any) -> Any:
    """numpy scalars (importance rows) as Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _study_facts(study: Any, trials: Sequence[Any], exps: Sequence[Any]) -> dict[str, Any]:
    """The study's trial counts by state, the epochs its trials spent and the trials whose
    experiment is not in this clone (``dvc exp pull`` brings them)."""
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    epochs = sum(int(t.user_attrs.get("epochs_run") or len(t.intermediate_values)) for t in trials)
    here = {e.name for e in exps}
    absent = [t.user_attrs.get("dvc_exp") for t in trials if t.user_attrs.get("dvc_exp") not in here]
    lines = [
        f"Trials: {len(trials)} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}); "
        f"epochs spent: {epochs} (a pruned trial stops early).",
    ]
    if absent:
        lines += ["", f"Not in this clone's experiments ({len(absent)}; `dvc exp pull origin` brings them): "
                  + ", ".join(f"`{n}`" for n in absent if n)]
    return {"trials": len(trials), "states": states, "epochs": epochs, "absent": absent, "lines": lines}


