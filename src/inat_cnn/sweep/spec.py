"""The sweep file: :class:`Sweep`, its YAML reading and its checks (:func:`load_sweep`).

A sweep file (``sweeps/*.yaml``) names params.yaml keys and the values to try::

    metric: metrics/train_scratch.json:best_val_acc  # FILE:KEY the report ranks by (validation only)
    goal: maximize                                   # or minimize (a loss)
    targets: [train_scratch]                         # stages each experiment reproduces (default: all)
    params:
      train.lr: [1.0e-2, 1.0e-3, 1.0e-4]
      model.activation: [relu, gelu]

The metric must not come from the test split: a metric of ``metrics/evaluate_*.json`` or
``metrics/compare.json`` is refused (:func:`~inat_cnn.sweep.results.refuse_test_metric`). The
library never reads params.yaml: it reads the sweep file it is given.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import UserError
from .results import DEFAULT_METRIC, parse_metric, refuse_test_metric

GOALS = ("maximize", "minimize")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class _SweepLoader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, plus YAML 1.2 floats: ``1e-4`` is a number, not a string."""


_SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)
# The resolver above also matches plain integers; PyYAML tries resolvers in the order they were
# added, so the built-in int resolver (added first) still wins for "32".


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: params key -> the values to try, and how to rank the results."""

    params: dict[str, list]
    metric: str = DEFAULT_METRIC
    goal: str = "maximize"
    targets: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    @property
    def size(self) -> int:
        """How many configurations the full grid has."""
        return math.prod(len(values) for values in self.params.values())


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and check a sweep file; every problem is a :class:`UserError` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sweep file (see sweeps/scratch.yaml for the format)")
    try:
        data = yaml.load(path.read_text(), Loader=_SweepLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with a 'params' key at the top level")
    unknown = sorted(set(data) - {"params", "metric", "goal", "targets"}, key=str)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a sweep file has params, metric, goal and targets")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{path}: 'params' must be a non-empty mapping of params.yaml keys to lists of values")
    for key, values in params.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise UserError(f"{path}: params key {key!r} is not of the form section.key (e.g. train.lr)")
        if not isinstance(values, list):
            raise UserError(f"{path}: {key} = {values!r} must be a list of values to try, e.g. [{values!r}]")
        if not values:
            raise UserError(f"{path}: {key} has an empty list; give at least one value")
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(seen)) != len(seen):
            raise UserError(f"{path}: {key} lists a value twice: {values!r}")
    metric = data.get("metric", DEFAULT_METRIC)
    parse_metric(metric, where=f"{path}: metric")
    refuse_test_metric(metric, where=f"{path}: metric")
    goal = data.get("goal", "maximize")
    if goal not in GOALS:
        raise UserError(f"{path}: goal = {goal!r}; expected maximize or minimize")
    targets = data.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise UserError(f"{path}: targets = {targets!r}; expected a list of stage names")
    return Sweep(params=dict(params), metric=metric, goal=goal, targets=tuple(targets), path=path)
