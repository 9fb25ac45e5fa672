"""Ranking a sweep's experiments by a validation metric (:func:`rank_experiments`): a study's
trials only (its pruned ones counted, not ranked), ties broken by the earliest. Nothing here reads a
test metric: the report shows those beside the ranking (report.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import UserError
from .results import Experiment, available_metrics, metric_value, parse_exp_show


@dataclass
class Ranking:
    """The experiments of one report: counted by status, the finished ones with the metric ranked."""

    exps: list[Experiment]
    trials: list[Any]  # the study's (FrozenTrial), or none
    counts: dict[str, int]  # by status: success, failed, queued, running
    pruned: list[Experiment]
    used: list[Experiment]  # finished, with the metric, in trial (else creation) order
    without: list[Experiment]  # finished without the metric
    ranked: list[Experiment]  # used, best first (ties: earliest first)

    @property
    def best(self) -> Experiment:
        return self.ranked[0]


def rank_experiments(exp_show_json: list, metric: str, higher_is_better: bool = True, study: Any = None) -> Ranking:
    """The finished experiments of ``dvc exp show --json`` ranked by ``metric`` (a study's trials only,
    its pruned ones counted, not ranked); a :class:`UserError` where none has the metric."""
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
    if not used and without:
        raise UserError(f"sweep report: none of the {len(without)} finished experiment(s) has {metric}; "
                        f"metrics they have: {', '.join(available_metrics(without)) or 'none'}")
    if not used:
        raise UserError(f"sweep report: no finished experiments; run dvc queue start "
                        f"({counts['queued']} queued, {counts['running']} running, {counts['failed']} failed)")
    ranked = sorted(used, key=lambda e: -e.value if higher_is_better else e.value)  # type: ignore[operator]
    return Ranking(exps, trials, counts, pruned, used, without, ranked)
