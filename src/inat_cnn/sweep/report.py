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

from ..core.files import write_json, write_text
from ..core.outputs import IMPORTANCE_CSV, SWEEP_SUMMARY
from .figures import write_figures
from .importance import param_importance, value_label, write_importance_csv
from .metric import metric_label, refuse_test_metric, reported_test_metric
from .ranking import Ranking, rank_experiments
from .results import Experiment, metric_value


def reported_test_values(used: Sequence[Experiment], metric: str) -> tuple[str | None, dict[str, float | None]]:
    """The test metric beside ``metric`` and each experiment's value of it, where any has one."""
    test_metric = reported_test_metric(metric)
    # an experiment's test accuracy only where every stage read the outputs the experiment wrote: a sweep
    # that stops at the training stage carries the baseline's metrics/evaluate_*.json along unchanged
    # (conservative: one stale stage downstream of the evaluation, such as compare, hides it too)
    tests = {e.name: None if e.stale_inputs else metric_value(e, test_metric) for e in used} if test_metric else {}
    return test_metric, tests if any(v is not None for v in tests.values()) else {}


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
    metric: one computed from the test split is a :class:`UserError`) and write ``out_dir``/
    {metric_vs_created,parallel_coordinates,importance,trial_curves}.png, importance.csv,
    summary.json and ``report_md``. ``keys`` (a sweep's params) limits which params count as swept;
    otherwise every param that varies does. Returns the counts, the best experiment and the
    importance rows.

    Failed, queued and running experiments are skipped and counted, as are finished ones without
    the metric. Importance: Spearman's rank correlation of each swept param with the metric and
    Optuna's fANOVA importance (:func:`.results.importance`). An experiment that carries the test
    accuracy of the same model (its evaluate stage ran) shows it in a column labelled as test
    accuracy; nothing is ranked or chosen by it. With an Optuna ``study``, only its trials'
    experiments count (matched by name), in trial order; pruned trials are counted and drawn
    (``trial_curves.png``) but not ranked, and the report adds the study's trial counts and epochs.
    """
    refuse_test_metric(metric, "sweep report: metric")
    out_dir, report_md = Path(out_dir), Path(report_md)
    ranking = rank_experiments(exp_show_json, metric, higher_is_better, study)
    columns, rows, note = param_importance(ranking.used, keys, seed)
    figures = write_figures(ranking, columns, rows, metric, higher_is_better, out_dir)
    write_importance_csv(rows, out_dir / IMPORTANCE_CSV)
    study_facts = _study_facts(study, ranking.trials, ranking.exps) if study is not None else {}
    md = _markdown(ranking, metric, higher_is_better, [c.key for c in columns], rows, note, top, study, study_facts)
    rel = Path(os.path.relpath(out_dir, report_md.parent))
    md += ["", "## Figures", ""] + [f"![{name[:-4]}]({(rel / name).as_posix()})" for name in figures]
    write_text(report_md, "\n".join(md) + "\n")
    result = _summary(ranking, metric, [c.key for c in columns], rows, figures, out_dir, report_md, study, study_facts)
    # the summary the pipeline's HTML report reads (its `report` stage depends on out_dir)
    write_json(out_dir / SWEEP_SUMMARY.name, json.loads(json.dumps(result, default=_plain)))
    return result


def _summary(ranking: Ranking, metric: str, swept: list[str], rows: list[dict[str, Any]], figures: list[str],
             out_dir: Path, report_md: Path, study: Any, study_facts: dict[str, Any]) -> dict[str, Any]:
    best, counts = ranking.best, ranking.counts
    return {
        "metric": metric, "label": metric_label(metric), "used": len(ranking.used), "failed": counts["failed"],
        "queued": counts["queued"], "running": counts["running"], "without_metric": len(ranking.without),
        "failed_names": [e.name for e in ranking.exps if e.status == "failed"],
        "best": {"name": best.name, "rev": best.rev, "value": best.value, "params": {k: best.params.get(k) for k in swept}},
        "swept": swept, "importance": rows, "figures": [str(out_dir / f) for f in figures], "report": str(report_md),
        "pruned": len(ranking.pruned), "study": study.study_name if study is not None else None,
        **{k: v for k, v in study_facts.items() if k != "lines"},
    }


def _markdown(ranking: Ranking, metric: str, higher_is_better: bool, swept: list[str], rows: list[dict[str, Any]],
              note: str, top: int, study: Any, study_facts: dict[str, Any]) -> list[str]:
    """reports/sweep.md up to its figures: counts, the study, the best configuration, the top, importance."""
    label, counts, without = metric_label(metric), ranking.counts, ranking.without
    failed = [e.name for e in ranking.exps if e.status == "failed"]
    md = [
        "# Sweep report",
        "",
        f"Ranked by {label} (`{metric}`, {'higher' if higher_is_better else 'lower'} is better). "
        "The test set ranks nothing here: it is measured once, on the chosen configuration.",
        "",
        f"Experiments: {len(ranking.used)} used, {counts['failed']} failed, {counts['queued']} queued, "
        f"{counts['running']} running" + (f", {len(without)} finished without the metric" if without else "") + ".",
    ]
    if failed:
        md += ["", "Failed (see `dvc queue logs NAME`): " + ", ".join(f"`{n}`" for n in failed)]
    if study_facts:
        md += ["", f"## Study `{study.study_name}`", "", *study_facts["lines"]]
    return md + _best_lines(ranking, label, swept) + _top_lines(ranking, metric, label, swept, top) + _importance_lines(
        ranking, label, rows, note)


def _best_lines(ranking: Ranking, label: str, swept: list[str]) -> list[str]:
    best = ranking.best
    ties = [e.name for e in ranking.ranked[1:] if e.value == best.value]
    tied = f" (tied with {', '.join(ties)}; the earliest is shown)" if ties else ""
    md = ["", f"## Best configuration (by {label})", "", f"**{best.name}**: {label} = {best.value:.4g}{tied}", ""]
    md += [_table(["param", "value"], [(k, best.params.get(k)) for k in swept]) if swept else "(no param varies)"]
    return md + [
        "", "Next: bring its params and outputs into the workspace, then run the rest of the pipeline, which "
        "evaluates the chosen configuration once on the test set:", "",
        "```bash", f"dvc exp apply {best.name}", "dvc repro", "```",
    ]


def _top_lines(ranking: Ranking, metric: str, label: str, swept: list[str], top: int) -> list[str]:
    ranked = ranking.ranked
    test_metric, tests = reported_test_values(ranking.used, metric)
    md = ["", f"## Top {min(top, len(ranked))} of {len(ranked)}", ""]
    test_header = ["test accuracy (not ranked)"] if tests else []
    md += [_table(["rank", "experiment", label, *test_header, *swept],
                  [(i, e.name, e.value, *([("" if tests.get(e.name) is None else tests[e.name])] if tests else []),
                    *(e.params.get(k) for k in swept))
                   for i, e in enumerate(ranked[:top], 1)])]
    if tests:
        md += ["", f"Test accuracy (`{test_metric}`) is shown where an experiment ran its evaluate stage; "
               f"the ranking and the best configuration come from {label} alone."]
    return md


def _importance_lines(ranking: Ranking, label: str, rows: list[dict[str, Any]], note: str) -> list[str]:
    md = ["", "## Parameter importance", ""]
    if not rows:
        return md + [note + "."]
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
    if len({e.value for e in ranking.used}) == 1:
        md += ["", f"Every experiment has the same {label}: nothing can be attributed to a param."]
    return md


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


