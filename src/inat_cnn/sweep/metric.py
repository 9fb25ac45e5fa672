"""Which metric a sweep ranks by: ``FILE:KEY`` (:func:`parse_metric`), the names around it (the
training stage's keys, the test accuracy reported beside it, a label for people) and the rule
that the test set decides nothing.

A sweep ranks by a validation metric (:data:`DEFAULT_METRIC`, the best epoch's validation
accuracy), and :func:`refuse_test_metric` rejects a metric from a file computed from the test
split (:data:`TEST_METRIC_FILES`).
"""

from __future__ import annotations

import fnmatch
import posixpath
from typing import Any

from ..core.errors import UserError
from ..core.outputs import ModelFiles, details_path

DEFAULT_METRIC = ModelFiles("scratch").ranking_metric
"""The best epoch's accuracy on the validation split, written by the train_scratch stage."""

LEGACY_KEYS = {"_val_acc": "best_val_acc", "_test_acc": "accuracy", "_epochs": "epochs_run",
               "_pruned_at": "pruned_after_epoch"}
"""Leaderboard keys (``<model>_val_acc``) -> the key the same number had in experiments run before
the metrics became a leaderboard, so a sweep report still ranks them."""

TEST_METRIC_FILES = (ModelFiles("*").test_metrics.as_posix(), "metrics/compare.json",
                     ModelFiles("*").details("evaluate").as_posix(), details_path("compare").as_posix())
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
    return ModelFiles(model).ranking_metric if model else DEFAULT_METRIC


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
