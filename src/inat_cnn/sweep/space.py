"""The search space and the samplers: a sweep file's params as Optuna distributions
(:func:`distributions`), a trial's params back as ``-S`` values (:func:`config_of`), and the
sampler that proposes them (:func:`make_sampler`: TPE, random or grid), seeded per clone
(:func:`clone_seed`, :func:`clone_id`) so that machines sharing a study draw their own sequences.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .spec import Range, Sweep

SAMPLERS = ("tpe", "random", "grid")
_PRIMITIVE = (type(None), bool, int, float, str)


def clone_id(repo: Path) -> str:
    """This clone's id, ``host:/abs/path``: it mixes the samplers' seeds (:func:`clone_seed`) and
    marks the trials its driver runs (``dvc_repo``)."""
    return f"{socket.gethostname()}:{Path(repo).resolve()}"


def _choice(value: Any) -> Any:
    """A categorical value as Optuna stores it: lists (per-block filters) as JSON text."""
    return value if isinstance(value, _PRIMITIVE) else json.dumps(value)


def distributions(sweep: Sweep) -> dict[str, Any]:
    """The sweep's search space as Optuna distributions, in the file's key order."""
    import optuna.distributions as d

    space = {}
    for key, values in sweep.params.items():
        if isinstance(values, Range):
            if values.is_int:
                space[key] = d.IntDistribution(int(values.low), int(values.high), log=values.log, step=int(values.step or 1))
            else:
                space[key] = d.FloatDistribution(float(values.low), float(values.high), log=values.log, step=values.step)
        else:
            space[key] = d.CategoricalDistribution([_choice(v) for v in values])
    return space


def config_of(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params as ``-S`` values (JSON-coded categorical values decoded)."""
    config = {}
    for key, values in sweep.params.items():
        value = params[key]
        if isinstance(values, list) and isinstance(value, str) and value not in values:
            value = json.loads(value)
        config[key] = value
    return config


def clone_seed(seed: int | None, clone: str | None) -> int | None:
    """``seed`` mixed with a clone's id (:func:`clone_id`: host and path), so that machines sharing a study
    with the same ``--seed`` each draw their own sequence, and one clone draws the same one every
    time (:func:`make_sampler`)."""
    if seed is None or clone is None:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{clone}".encode()).digest()[:4], "big")


def make_sampler(name: str, sweep: Sweep, seed: int | None, startup_trials: int = 10, clone: str | None = None) -> Any:
    """TPE (with ``constant_liar``: the J trials in flight count as bad guesses, so parallel
    workers do not all try the same region), random, or grid (every combination once); the
    seed of TPE and random is mixed with ``clone`` (:func:`clone_seed`). Not the grid's: trial N
    takes the N-th configuration of the grid in ``seed``'s order, so the study's trial numbers
    share the grid out among machines, which works only if every machine orders it alike."""
    import optuna

    mixed = clone_seed(seed, clone)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=mixed, constant_liar=True, n_startup_trials=startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=mixed)
    if name == "grid":
        return _AskTellGrid({k: [_choice(v) for v in vs] for k, vs in sweep.grid().items()}, seed=seed)
    raise UserError(f"--sampler = {name!r}; expected one of {', '.join(SAMPLERS)}")


def _ask_tell_grid() -> type:
    import optuna

    class AskTellGrid(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its ``study.stop()`` once the grid is used up, which only
        works inside ``study.optimize``: the driver stops at ``--trials``, capped at the grid's size."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return AskTellGrid


def _AskTellGrid(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - a class made on first use (Optuna's import is lazy)
    return _ask_tell_grid()(*args, **kwargs)

