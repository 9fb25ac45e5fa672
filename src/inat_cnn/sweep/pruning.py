"""Pruning from inside a training stage: a trial of a study reports each epoch's validation metric
to the study, and stops when the study's pruner says so.

How a stage knows it runs as a trial: ``inat-cnn sweep run`` starts DVC's queue workers with
:data:`STORAGE_ENV` (the Optuna storage URL) and :data:`STUDY_ENV` (the study's name) in their
environment, which the workers pass on to every stage they run; DVC sets ``DVC_EXP_NAME`` (the
experiment's name, ``<study>-t<number>``, :func:`trial_name`) in the process of a queued
experiment. With all three, :func:`epoch_hook_from_env` returns the hook the training loop calls
after every epoch; otherwise (``dvc repro``, ``dvc exp run``, a queue not started by a sweep)
pruning is off and it returns None.

The pruner and the epoch row's key to report are read from the study's user attributes
(:data:`PRUNER_ATTR`, :data:`EPOCH_KEY_ATTR`), written by the driver when it creates the study, so
a trial prunes exactly as its driver configured. This module is imported by the training stages:
it imports nothing else of the project's sweep package, and Optuna only when a hook is made.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:  # the one definition, in the training loop that calls it (no import at run time)
    from ..training.loop import EpochHook

STORAGE_ENV = "INAT_CNN_SWEEP_STORAGE"
STUDY_ENV = "INAT_CNN_SWEEP_STUDY"
EXP_NAME_ENV = "DVC_EXP_NAME"  # set by DVC in a queued experiment's stage processes
PRUNER_ATTR = "pruner"
EPOCH_KEY_ATTR = "epoch_key"
PRUNERS = ("hyperband", "halving", "median", "none")
"""--pruner: Hyperband, successive halving (ASHA), the median rule, no pruning; or ``below:X``
(stop a trial whose epoch value is below X after its first epoch)."""

DEFAULT_PRUNER = "halving"
"""What measured best in benchmarks/sweep_search.py on the grid it was chosen on, and kept its goal
(within 0.01 of the grid's best in at most 1/4 of the grid's epochs) on two grids it was not chosen
on: benchmarks/RESULTS.md, "Sweep search" and "Two grids the default pruner was not chosen on"."""



def trial_name(study: str, number: int) -> str:
    """The DVC experiment name of trial ``number`` of ``study``: ``<study>-t<number>``."""
    return f"{study}-t{number}"


def trial_number(exp_name: str | None, study: str) -> int | None:
    """The trial number that :func:`trial_name` put in ``exp_name``, or None for another name."""
    found = re.fullmatch(re.escape(study) + r"-t(\d+)", exp_name or "")
    return int(found.group(1)) if found else None


def quiet_optuna() -> Any:
    """The ``optuna`` module, with its per-trial info lines off (the driver prints its own)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


JUDGED_FROM_EPOCH = 3
"""The first epoch a trial may be pruned after (hyperband, halving, median). The training recipe
warms the learning rate up over its first epochs (2 by default), where validation accuracy is
near chance for every configuration: measured on the default data, a Hyperband pruner judging
from epoch 1 pruned 4 of 6 trials at 0.1 val accuracy after epoch 1."""


def make_pruner(spec: str) -> Any:
    """An Optuna pruner from its --pruner name (:data:`PRUNERS`, or ``below:X``)."""
    optuna = quiet_optuna()

    if spec == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=JUDGED_FROM_EPOCH, max_resource="auto", reduction_factor=3)
    if spec == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=JUDGED_FROM_EPOCH, reduction_factor=3)
    if spec == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=JUDGED_FROM_EPOCH)
    if spec == "none":
        return optuna.pruners.NopPruner()
    if spec.startswith("below:"):
        try:
            lower = float(spec.split(":", 1)[1])
        except ValueError:
            lower = None
        if lower is not None:
            return optuna.pruners.ThresholdPruner(lower=lower, n_warmup_steps=0)
    raise UserError(f"--pruner = {spec!r}; expected one of {', '.join(PRUNERS)} or below:X (e.g. below:0.2)")


def open_storage(url: str, **heartbeat: Any) -> Any:
    """The Optuna storage at ``url`` (an SQLAlchemy URL: sqlite:///..., postgresql://...); SQLite
    waits up to 60 s for a lock, as the driver and J training processes write to one file.
    ``heartbeat``: RDBStorage's ``heartbeat_interval``, ``grace_period`` and
    ``heartbeat_stale_trial_callback``, which only the sweep's driver sets (an experimental Optuna
    feature: its warning is silenced)."""
    import warnings

    optuna = quiet_optuna()

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    if url.startswith("postgresql://"):  # psycopg 3 (the postgres extra), whatever SQLAlchemy's default driver
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **heartbeat)


def epoch_hook_from_env(environ: dict[str, str] | None = None) -> EpochHook | None:
    """The training loop's per-epoch hook of the trial this process runs, or None (pruning off)
    outside a sweep. The hook reports the epoch's value (``row[epoch_key]`` at step
    ``row["epoch"]``) and returns whether the pruner stops the trial. A study that cannot be
    reached leaves training alone (a warning, no pruning): a trial never fails for pruning."""
    env = os.environ if environ is None else environ
    storage_url, study_name = env.get(STORAGE_ENV), env.get(STUDY_ENV)
    if not storage_url or not study_name:
        return None
    number = trial_number(env.get(EXP_NAME_ENV), study_name)
    if number is None:
        # A queue worker another driver started (an idle one lingers ~10 s and takes the next
        # study's trials) carries that driver's study in its environment: the experiment's own name
        # (<study>-t<number>) says whose trial this is; the lookup below fails for a name that is not one.
        found = re.fullmatch(r"(.+)-t(\d+)", env.get(EXP_NAME_ENV) or "")
        if found is None:
            return None
        study_name, number = found.group(1), int(found.group(2))
    try:
        optuna = quiet_optuna()
        storage = open_storage(storage_url)
        study_id = storage.get_study_id_from_name(study_name)
        attrs = storage.get_study_user_attrs(study_id)
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(attrs.get(PRUNER_ATTR, "none")))
        trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
    except Exception as exc:  # noqa: BLE001 - pruning is an optimisation, never a reason to fail
        print(f"warning: pruning off: trial {number} of study {study_name!r} not found at {STORAGE_ENV}: {exc}", flush=True)
        return None
    key = attrs.get(EPOCH_KEY_ATTR, "val_acc")
    print(f"pruning on: trial {number} of study {study_name!r} reports {key} each epoch", flush=True)

    def hook(row: dict[str, float]) -> bool:
        try:
            trial.report(float(row[key]), int(row["epoch"]))
            return bool(trial.should_prune())
        except Exception as exc:  # noqa: BLE001 - the study went away or was told already: train on
            print(f"warning: could not report epoch {row.get('epoch')} to study {study_name!r}: {exc}", flush=True)
            return False

    return hook
