"""Which params mattered: the swept params as :class:`Column` rows (:func:`swept_columns`), each
one's Spearman correlation with the metric and Optuna's fANOVA importance (:func:`importance`,
:func:`param_importance`), and ``importance.csv`` (:func:`write_importance_csv`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import write_text
from .results import Experiment, number


def hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


@dataclass
class Column:
    """One swept param over the used experiments: numeric (ints, floats), boolean or categorical."""

    key: str
    values: list[Any]
    kind: str = ""
    levels: list[Any] = field(default_factory=list)  # categorical/boolean: distinct values

    def __post_init__(self) -> None:
        numbers = [number(v) for v in self.values]
        if all(isinstance(v, bool) for v in self.values):
            self.kind, self.levels = "boolean", [False, True]
        elif all(n is not None for n in numbers):
            self.kind = "numeric"
            self.values = numbers
        else:
            self.kind = "categorical"
            self.levels = list(dict.fromkeys(hashable(v) for v in self.values))  # order of first appearance

    def ordinal(self) -> np.ndarray:
        """Numbers for a rank correlation: the value, 0/1, or the level's order of first appearance."""
        if self.kind == "numeric":
            return np.asarray(self.values, dtype=float)
        return np.asarray([self.levels.index(hashable(v)) for v in self.values], dtype=float)


def swept_columns(exps: Sequence[Experiment], keys: Sequence[str] | None = None) -> list[Column]:
    """The params that vary across ``exps`` (restricted to ``keys``, in their order, when given)."""
    candidates = list(keys) if keys else sorted({k for e in exps for k in e.params})
    columns = []
    for key in candidates:
        values = [e.params.get(key) for e in exps]
        if len({hashable(v) for v in values}) > 1:
            columns.append(Column(key, values))
    return columns


def importance(columns: Sequence[Column], y: np.ndarray, seed: int = 0) -> list[dict[str, Any]]:
    """Per swept param: the Spearman rank correlation with the metric and Optuna's fANOVA importance
    (the share of the metric's variance a param explains, from a seeded random forest over the
    trials), sorted by importance. The experiments are given to Optuna as trials of an in-memory
    study, so a study's trials and experiments queued by hand are ranked the same way. Spearman is
    None where it is undefined (the metric or the param is constant); every importance is 0 when
    the metric is constant."""
    import optuna
    from scipy.stats import spearmanr

    space = {c.key: optuna.distributions.FloatDistribution(min(c.values), max(c.values)) if c.kind == "numeric"
             else optuna.distributions.CategoricalDistribution([hashable(v) for v in c.levels]) for c in columns}
    shares = dict.fromkeys(space, 0.0)
    if len(set(y.tolist())) > 1:
        study = optuna.create_study()
        study.add_trials([
            optuna.trial.create_trial(params={c.key: hashable(c.values[i]) for c in columns}, distributions=space, value=float(v))
            for i, v in enumerate(y)
        ])
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        shares.update(optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True))
    rows = []
    for column in columns:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConstantInputWarning: reported as None
            rho = spearmanr(column.ordinal(), y).statistic
        share = float(shares[column.key])
        rows.append({
            "param": column.key,
            "kind": column.kind,
            "distinct_values": len(set(map(hashable, column.values))),
            "spearman": None if rho is None or not math.isfinite(rho) else float(rho),
            "importance": share if math.isfinite(share) else 0.0,
        })
    return sorted(rows, key=lambda r: -r["importance"])


def param_importance(used: Sequence[Experiment], keys: Sequence[str] | None, seed: int) -> tuple[list[Column], list[dict[str, Any]], str]:
    """The swept params, their importance rows (see :func:`importance`) and, where there are none, why."""
    columns = swept_columns(used, keys)
    if len(used) < 2:
        return columns, [], "only 1 finished experiment: no parameter importance is possible"
    if not columns:
        return columns, [], "no param varies across the finished experiments: nothing to rank"
    return columns, importance(columns, np.array([e.value for e in used], dtype=float), seed), ""


def write_importance_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """The importance rows as CSV (param, kind, distinct_values, spearman, importance)."""
    csv = ["param,kind,distinct_values,spearman,importance"]
    csv += [f"{r['param']},{r['kind']},{r['distinct_values']},{'' if r['spearman'] is None else r['spearman']},{r['importance']}" for r in rows]
    write_text(path, "\n".join(csv) + "\n")
