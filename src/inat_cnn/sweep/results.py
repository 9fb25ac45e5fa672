"""Reading a sweep's results from ``dvc exp show --json``.

:func:`parse_exp_show` turns DVC's JSON into :class:`Experiment` rows (finished, failed, queued or
running), :func:`metric_value` reads a metric of one. Which metric (and why never a test one):
:mod:`.metric`; which params mattered: :mod:`.importance`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserError
from .metric import lookup, parse_metric


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


def number(value: Any) -> float | None:
    """A finite number from a metric or param value (YAML 1.1 reads 1e-05 as a string), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):  # 1e-05 as YAML 1.1 reads it
        try:
            found = float(value)
        except ValueError:
            return None
        return found if math.isfinite(found) else None
    return None


def metric_value(exp: Experiment, metric: str) -> float | None:
    file, key = parse_metric(metric)
    return number(lookup(exp.metrics.get(file), key))


def available_metrics(exps: Iterable[Experiment]) -> list[str]:
    names: set[str] = set()
    for exp in exps:
        for file, data in exp.metrics.items():
            names.update(f"{file}:{k}" for k, v in _flatten(data or {}).items() if number(v) is not None)
    return sorted(names)
