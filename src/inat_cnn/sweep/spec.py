"""The sweep file: :class:`Sweep`, its YAML reading and its checks (:func:`load_sweep`).

A sweep file (``sweeps/*.yaml``) names params.yaml keys and what to try for each: a list of
values (categorical) or a :class:`Range` (floats, or integers when both ends are integers)::

    metric: metrics/train_scratch.json:scratch_val_acc  # FILE:KEY the study maximizes (validation only)
    goal: maximize                                   # or minimize (a loss)
    targets: [train_scratch]                         # stages each experiment reproduces (default: all)
    params:
      train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}
      model.dense_units: {low: 64, high: 512, step: 64}
      model.activation: [relu, gelu]

The metric must not come from the test split: a metric of ``metrics/evaluate_*.json`` or
``metrics/compare.json`` is refused (:func:`~inat_cnn.sweep.metric.refuse_test_metric`). The
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
from .metric import DEFAULT_METRIC, parse_metric, refuse_test_metric

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


RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Range:
    """``{low, high, log, step}``: an integer range when ``low``, ``high`` (and ``step``) are
    integers, else a float range; both ends included."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (self.step is None or isinstance(self.step, int))

    def values(self) -> list | None:
        """Every value (an integer range, or a float range with a step); None for a continuous range."""
        if self.is_int:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [self.low + i * self.step for i in range(count)]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: params key -> the values (a list) or the :class:`Range` to try, and
    how to rank the results."""

    params: dict[str, list | Range]
    metric: str = DEFAULT_METRIC
    goal: str = "maximize"
    targets: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # here, not in load_sweep alone: every Sweep (a benchmark's, a test's) is an Optuna objective
        refuse_test_metric(self.metric, where=f"{self.path}: metric" if self.path else "sweep metric")

    @property
    def size(self) -> float:
        """How many configurations the full grid has (``math.inf`` with a continuous range)."""
        counts = [len(v) if isinstance(v, list) else len(v.values() or []) or math.inf for v in self.params.values()]
        return math.prod(counts)

    def grid(self) -> dict[str, list]:
        """Every key's values for a grid search; a :class:`UserError` naming a continuous range."""
        found = {}
        for key, space in self.params.items():
            values = space if isinstance(space, list) else space.values()
            if values is None:
                raise UserError(f"{self.path or 'sweep'}: {key} is a continuous range; a grid needs a list of values, "
                                "an integer range or a step (or use --sampler tpe / random)")
            found[key] = values
        return found


def _range(path: Path, key: str, spec: dict) -> Range:
    """A ``{low, high, log, step}`` mapping, checked."""
    unknown = sorted(set(spec) - set(RANGE_KEYS), key=str)
    if unknown:
        raise UserError(f"{path}: {key} has unknown range key {unknown[0]!r}; a range has low, high, log and step")
    for end in ("low", "high"):
        value = spec.get(end)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path}: {key}.{end} = {value!r}; a range needs finite numbers low and high, "
                            "e.g. {low: 1.0e-5, high: 1.0e-2, log: true}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not low < high:
        raise UserError(f"{path}: {key} is an empty range (low {low!r} >= high {high!r}); give low < high, "
                        "or a list for a single value")
    if not isinstance(log, bool):
        raise UserError(f"{path}: {key}.log = {log!r}; expected true or false")
    if log and low <= 0:
        raise UserError(f"{path}: {key} has log: true and low = {low!r}; a log range needs low > 0")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise UserError(f"{path}: {key}.step = {step!r}; expected a positive number")
        if log:
            raise UserError(f"{path}: {key} has both log and step; use one")
    return Range(low, high, log, step)


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
        raise UserError(f"{path}: 'params' must be a non-empty mapping of params.yaml keys to lists of values or ranges")
    for key, values in params.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise UserError(f"{path}: params key {key!r} is not of the form section.key (e.g. train.lr)")
        if isinstance(values, dict):
            params[key] = _range(path, key, values)
            continue
        if not isinstance(values, list):
            raise UserError(f"{path}: {key} = {values!r} must be a list of values to try, e.g. [{values!r}], "
                            "or a range {low: ..., high: ..., log: true|false}")
        if not values:
            raise UserError(f"{path}: {key} has an empty list; give at least one value")
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(seen)) != len(seen):
            raise UserError(f"{path}: {key} lists a value twice: {values!r}")
    metric = data.get("metric", DEFAULT_METRIC)
    parse_metric(metric, where=f"{path}: metric")
    goal = data.get("goal", "maximize")
    if goal not in GOALS:
        raise UserError(f"{path}: goal = {goal!r}; expected maximize or minimize")
    targets = data.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise UserError(f"{path}: targets = {targets!r}; expected a list of stage names")
    return Sweep(params=dict(params), metric=metric, goal=goal, targets=tuple(targets), path=path)
