"""Reading a sweep's results from ``dvc exp show --json``, and which params mattered.

:func:`parse_exp_show` turns DVC's JSON into :class:`Experiment` rows (finished, failed, queued or
running); :func:`swept_columns` finds the params that vary; :func:`importance` gives each one's
Spearman correlation with the metric and Optuna's fANOVA importance.

The test set decides nothing: a sweep ranks by a validation metric (:data:`DEFAULT_METRIC`, the
best epoch's validation accuracy), and :func:`refuse_test_metric` rejects a metric from a file
computed from the test split (:data:`TEST_METRIC_FILES`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import posixpath
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import UserError

DEFAULT_METRIC = "metrics/train_scratch.json:scratch_val_acc"
"""The best epoch's accuracy on the validation split, written by the train_scratch stage."""

LEGACY_KEYS = {"_val_acc": "best_val_acc", "_test_acc": "accuracy", "_epochs": "epochs_run",
               "_pruned_at": "pruned_after_epoch"}
"""Leaderboard keys (``<model>_val_acc``) -> the key the same number had in experiments run before
the metrics became a leaderboard, so a sweep report still ranks them."""

TEST_METRIC_FILES = ("metrics/evaluate_*.json", "metrics/compare.json", "metrics/details/evaluate_*.json",
                     "metrics/details/compare.json")
"""Files computed from the test split (the evaluate stages' leaderboard rows and details, and compare,
which reads them; metrics/compare.json is where older experiments have it): never a sweep's ranking metric."""

_LABELS = {"val_acc": "validation accuracy", "best_val_acc": "validation accuracy", "best_val_loss": "validation loss"}


def parse_metric(metric: Any, where: str = "metric") -> tuple[str, str]:
    """``"metrics/x.json:test.accuracy"`` -> ``("metrics/x.json", "test.accuracy")``."""
    if not isinstance(metric, str) or ":" not in metric or metric.endswith(":") or metric.startswith(":"):
        raise UserError(f"{where} = {metric!r}; expected FILE:KEY, e.g. {DEFAULT_METRIC}")
    file, key = metric.rsplit(":", 1)
    return file, key


def _normal(file: str) -> str:
    """``./metrics//x.json`` and ``metrics\\x.json`` -> ``metrics/x.json``: the path as dvc writes it."""
    return posixpath.normpath(file.replace("\\", "/"))


def is_test_metric_file(file: str) -> bool:
    """Whether ``file`` (a metrics file's path) is computed from the test split."""
    return any(fnmatch.fnmatchcase(_normal(file), pattern) for pattern in TEST_METRIC_FILES)


def _model(file: str) -> str | None:
    """``metrics/evaluate_finetune.json`` or ``metrics/train_finetune.json`` -> ``finetune``."""
    name = posixpath.basename(_normal(file))
    for prefix in ("evaluate_", "train_"):
        if name.startswith(prefix) and name.endswith(".json"):
            return name[len(prefix):-len(".json")] or None
    return None


def validation_metric_for(metric: str) -> str:
    """The validation metric to rank by instead: ``metrics/train_<model>.json:<model>_val_acc``."""
    model = _model(parse_metric(metric)[0])
    return f"metrics/train_{model}.json:{model}_val_acc" if model else DEFAULT_METRIC


def refuse_test_metric(metric: str, where: str = "metric") -> None:
    """A :class:`UserError` when ``metric`` (FILE:KEY) comes from a file computed from the test
    split: ranking a sweep by it would let the test set choose the model."""
    file, _ = parse_metric(metric, where)
    if is_test_metric_file(file):
        raise UserError(
            f"{where} = {metric!r}: {file} is computed from the test split, and the test set decides "
            f"nothing (no ranking, no choice). Rank by validation accuracy instead: {validation_metric_for(metric)}"
        )


def reported_test_metric(metric: str) -> str | None:
    """The test accuracy that goes with a training stage's metric (``metrics/train_scratch.json:...``
    -> ``metrics/evaluate_scratch.json:scratch_test_acc``), to be shown beside it and never ranked by."""
    file, _ = parse_metric(metric)
    model = _model(file)
    if model is None or not posixpath.basename(_normal(file)).startswith("train_"):
        return None
    return f"{posixpath.dirname(_normal(file))}/evaluate_{model}.json:{model}_test_acc".lstrip("/")


def training_key(metric: str, suffix: str) -> str:
    """The training stage's leaderboard key ``<model>_<suffix>`` beside ``metric`` (``epochs``, ``pruned_at``)."""
    return f"{_model(parse_metric(metric)[0]) or 'scratch'}_{suffix}"


def metric_label(metric: str) -> str:
    """A name for people: ``validation accuracy`` for ``...:scratch_val_acc``, else the key."""
    key = parse_metric(metric)[1]
    return _LABELS.get(key, _LABELS.get(key.split("_", 1)[-1], key))


def lookup(data: Any, key: str) -> Any:
    """``data``'s value at the dotted ``key``, or at its :data:`LEGACY_KEYS` name; None where neither is."""
    for candidate in (key, *(old for new, old in LEGACY_KEYS.items() if key.endswith(new) and "." not in key)):
        node = data
        for part in candidate.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


# --------------------------------------------------------------------- reading dvc exp show --json


@dataclass
class Experiment:
    """One row of ``dvc exp show --json``: its status, flattened params and metrics."""

    name: str
    rev: str
    status: str  # success | failed | queued | running
    timestamp: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    stale_inputs: tuple[str, ...] = ()  # outputs whose consumers recorded an older version (stages it did not run)
    value: float | None = None  # the ranked metric, once looked up
    trial: Any = None  # the Optuna trial (a FrozenTrial) this experiment ran, in a study's report


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def _status(entry: dict, rev: dict) -> str:
    """DVC 3.x puts the state in ``executor.state`` (queued, running, success, failed); older
    versions in a ``status`` field (Queued, Running, Success, Failed). A failed run also carries
    ``error: {"msg": "Experiment run failed"}`` on its rev."""
    executor = entry.get("executor") or {}
    state = executor.get("state") or rev.get("status") or (rev.get("data") or {}).get("status")
    state = str(state).lower() if state else ""
    if state in ("queued", "running", "failed"):
        return state
    return "failed" if rev.get("error") else "success"


def parse_exp_show(rows: list) -> list[Experiment]:
    """Every experiment under every commit of ``dvc exp show --json`` (baselines are not experiments)."""
    if not isinstance(rows, list):
        raise UserError("sweep: `dvc exp show --json` did not return a list; is this DVC 3?")
    found = []
    for row in rows:
        for entry in row.get("experiments") or []:
            revs = entry.get("revs") or []
            if not revs:
                continue
            rev = revs[0]
            data = rev.get("data") or {}
            params: dict[str, Any] = {}
            for file, content in (data.get("params") or {}).items():
                flat = _flatten((content or {}).get("data") or {})
                params.update(flat if file == "params.yaml" else {f"{file}:{k}": v for k, v in flat.items()})
            metrics = {file: (content or {}).get("data") for file, content in (data.get("metrics") or {}).items()}
            name = rev.get("name") or entry.get("name") or str(rev.get("rev", "?"))[:7]
            found.append(Experiment(name, rev.get("rev", ""), _status(entry, rev), data.get("timestamp"), params, metrics,
                                    _stale_inputs(data)))
    return found


def _stale_inputs(data: dict[str, Any]) -> tuple[str, ...]:
    """Paths an experiment wrote (``outs``) whose hash differs from what the stages reading them
    recorded (``deps``): those stages did not run in it (a sweep with ``targets: [train_scratch]``
    leaves evaluate_scratch's lock entry, and metrics/evaluate_scratch.json, as the baseline's)."""
    deps, outs = data.get("deps") or {}, data.get("outs") or {}
    return tuple(sorted(path for path, out in outs.items()
                        if path in deps and (deps[path] or {}).get("hash") != (out or {}).get("hash")))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):  # 1e-05 as YAML 1.1 reads it
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def metric_value(exp: Experiment, metric: str) -> float | None:
    file, key = parse_metric(metric)
    return _number(lookup(exp.metrics.get(file), key))


def available_metrics(exps: Iterable[Experiment]) -> list[str]:
    names: set[str] = set()
    for exp in exps:
        for file, data in exp.metrics.items():
            names.update(f"{file}:{k}" for k, v in _flatten(data or {}).items() if _number(v) is not None)
    return sorted(names)


# ------------------------------------------------------------------------------ param analysis


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
        numbers = [_number(v) for v in self.values]
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
