"""Optuna proposes, DVC's queue runs: the study driver behind ``inat-cnn sweep run``.

An Optuna study (in an Optuna storage: by default the git-ignored SQLite file
:data:`DEFAULT_STORAGE` of the repository, or a PostgreSQL URL shared by several machines) asks
for configurations with one of :data:`SAMPLERS`; each trial becomes the DVC experiment
``<study>-t<number>`` (``dvc exp run --queue -S ...``), run by ``dvc queue start -j J`` workers
that inherit the study's storage and name (:mod:`.pruning`), so the training loop reports every
epoch and the pruner can stop it. When the experiment is committed, its validation metric is told
back (a pruned run as a pruned trial; a failed run as a failed trial, and the study goes on).

A killed driver started again with the same study resumes: the trials this clone left running
are collected when their experiment finished, followed while it is queued or running, and queued
again when DVC never heard of it; ``--trials N`` counts every trial of the study (all machines),
so nothing is run twice.

DVC's queue can lose an entry (a worker that stops as it takes it does not put it back: the entry
stays "Running" for ever); the driver watches the queue's process files and queues such a trial
again (:meth:`Driver.stuck`, :meth:`Driver.recover`).

Several machines, one study: each clone runs the same ``sweep run`` against one shared storage
(PostgreSQL). Trial numbers are the study's (Optuna numbers them under a lock), so experiment
names never collide; the sampler's seed is mixed with the clone's id (:func:`clone_seed`), so two
machines given the same ``--seed`` do not propose the same sequence. Each driver beats a heartbeat
for its trials in flight (Optuna's RDBStorage heartbeat, on the database's clock); a trial whose
driver stopped beating for ``--stale-after`` seconds is failed by whichever driver notices, and its
configuration is asked again (:func:`retry_stale`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .pruning import (
    DEFAULT_PRUNER, EPOCH_KEY_ATTR, PRUNER_ATTR, STORAGE_ENV, STUDY_ENV, make_pruner, open_storage, quiet_optuna, trial_name,
)
from .queue import (
    Task, dvc, executor_alive, experiment_refs, json_at, queue_command, queue_experiment, queue_tasks, start_workers,
    status_by_name, workers_alive,
)
from .results import lookup, parse_metric, reported_test_metric, training_key
from .spec import Range, Sweep

SAMPLERS = ("tpe", "random", "grid")
DEFAULT_STORAGE = ".optuna/sweeps.db"
"""The default storage, relative to the repository root (git-ignored)."""
STALE_AFTER_S = 600
"""--stale-after: seconds without a heartbeat after which another driver's running trial is failed."""
MIN_STALE_AFTER_S = 30
"""A driver is busy for seconds at a time (queueing an experiment, starting workers) between beats."""
LOST_AFTER_S = 90.0
"""Seconds a queue entry may stay "Running" with no process running it (a worker sets an experiment up
before it starts, and collects it after) before the driver takes it as lost and queues it again."""
RETRY_ATTR = "retry_of"
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PRIMITIVE = (type(None), bool, int, float, str)


def default_storage_url(repo: Path) -> str:
    """``sqlite:////abs/path/.optuna/sweeps.db``: absolute, so the queue's workers (in temporary
    copies of the repository) reach the same file."""
    return f"sqlite:///{(Path(repo).resolve() / DEFAULT_STORAGE).as_posix()}"


def check_study_name(name: str, where: str = "--study") -> str:
    """A study name that fits in a DVC experiment name (a git ref)."""
    if not _STUDY_NAME.fullmatch(name or "") or name.endswith((".", ".lock")) or ".." in name:
        raise UserError(f"{where} = {name!r}; use letters, digits, '_', '-' and '.' (at most 64), e.g. scratch")
    return name


# ------------------------------------------------------------------------------- search space


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
    """``seed`` mixed with a clone's id (:func:`_me`: host and path), so that machines sharing a study
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


# ------------------------------------------------------------------------------- the study


def connect(url: str, **heartbeat: Any) -> Any:
    """The Optuna storage at ``url`` (``heartbeat``: :func:`heartbeat_settings`, the driver's); one
    line naming the URL when it cannot be opened or reached. Machines that open a new database at
    the same moment all create Optuna's tables, and all but one fail (a unique constraint, "relation
    already exists"): they try again (up to 3 times), and find the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            try:
                storage = open_storage(url, **heartbeat)
                storage.get_all_studies()  # a round trip: an unreachable server fails here
                break
            except (IntegrityError, ProgrammingError):
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, drivers, sockets: all one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--storage {url}: cannot open the Optuna storage ({type(exc).__name__}: {first}); "
                        "check the URL, the server and its driver (postgresql: pip install -e '.[postgres]')") from None
    return storage


def heartbeat_settings(stale_after: int) -> dict[str, Any]:
    """RDBStorage's heartbeat for a driver: a beat about every tenth of ``stale_after`` (1 to 60 s),
    a running trial stale after ``stale_after`` s without one, and :func:`retry_stale` then."""
    return {"heartbeat_interval": max(1, min(60, stale_after // 10)), "grace_period": stale_after,
            "heartbeat_stale_trial_callback": retry_stale}


def retry_stale(study: Any, trial: Any) -> None:
    """Optuna calls this for each trial it failed as stale (its driver stopped beating): the same
    configuration is queued in the study (a waiting trial, the next one asked, anywhere), marked
    ``retry_of`` so the stale one does not count towards ``--trials``."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
    print(f"trial {trial.number} ({trial.user_attrs.get('dvc_exp')}, driven by {trial.user_attrs.get('dvc_repo')}): "
          "no heartbeat from its driver: failed as stale; its configuration is asked again", flush=True)


def _space_attr(sweep: Sweep) -> str:
    return json.dumps({k: (v if isinstance(v, list) else v.__dict__) for k, v in sweep.params.items()}, sort_keys=True, default=str)


def epoch_key(metric: str) -> str:
    """The training loop's epoch row key that goes with a ranking metric (what a trial reports)."""
    key = parse_metric(metric)[1]
    return "val_loss" if "loss" in key else "val_acc"


def open_study(sweep: Sweep, name: str, storage: Any, *, sampler: Any, pruner: str | None) -> Any:
    """Create or load study ``name`` for ``sweep``; a study created from another search space or
    goal is refused (one study, one question). ``pruner`` None: the study's own (a new study's:
    :data:`DEFAULT_PRUNER`); another pruner than the one that judged a study's trials is refused
    too, as the trials would be pruned by two rules."""
    import optuna

    direction = "maximize" if sweep.goal == "maximize" else "minimize"
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction=direction,
                                load_if_exists=True)
    attrs = study.user_attrs
    space = _space_attr(sweep)
    if "space" in attrs and (attrs["space"] != space or attrs.get("metric") != sweep.metric
                             or study.direction.name.lower() != direction):
        raise UserError(f"--study {name}: this study was created from another search space, metric or goal "
                        f"({attrs.get('sweep_file')}); give a new --study name (or the same sweep file)")
    recorded = attrs.get(PRUNER_ATTR)
    trials = len(study.get_trials(deepcopy=False))
    if recorded and pruner not in (None, recorded) and trials:
        raise UserError(f"--pruner {pruner}: study {name} was run with the {recorded} pruner, which judged its "
                        f"{trials} trial(s); resume it with --pruner {recorded} (or no --pruner), "
                        "or give a new --study name")
    pruner = pruner or recorded or DEFAULT_PRUNER
    study.pruner = make_pruner(pruner)
    for key, value in {"space": space, "metric": sweep.metric, "targets": list(sweep.targets),
                       "sweep_file": str(sweep.path or ""), PRUNER_ATTR: pruner,
                       EPOCH_KEY_ATTR: epoch_key(sweep.metric)}.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def check_params_known(sweep: Sweep, repo: Path) -> None:
    """Every swept key is a param of the pipeline (as DVC reads them: ``dvc params diff --all``)."""
    known: set[str] = set()
    for file, params in json.loads(dvc(["params", "diff", "--all", "--json"], repo, "reading the pipeline's params") or "{}").items():
        known.update(params if file == "params.yaml" else (f"{file}:{k}" for k in params))
    for key in sweep.params:
        if known and key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            raise UserError(f"{sweep.path}: params key {key!r} is not a param of this pipeline (dvc.yaml / params.yaml)"
                            + (f"; did you mean {close[0]}?" if close else ""))


# ------------------------------------------------------------------------------- the driver


@dataclass
class RunSummary:
    study: str
    storage: str
    told: dict[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL -> count, this run
    requeued: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # experiments this run queued


def _me(repo: Path) -> str:
    return f"{socket.gethostname()}:{Path(repo).resolve()}"


class Driver:
    """Keeps ``jobs`` trials in flight until the study holds ``trials`` finished ones."""

    def __init__(self, study: Any, storage: Any, sweep: Sweep, repo: Path, storage_url: str, *, jobs: int,
                 poll_s: float = 2.0, status_every_s: float = 6.0, lost_after_s: float = LOST_AFTER_S) -> None:
        self.study, self.storage, self.sweep, self.repo, self.jobs = study, storage, sweep, Path(repo), jobs
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.poll_s, self.status_every_s, self.lost_after_s = poll_s, status_every_s, lost_after_s
        self.beat_every = storage.get_heartbeat_interval()  # None: no heartbeats (a storage opened without)
        self.last_beat = -math.inf
        self.me = _me(repo)
        self.env = dict(os.environ, **{STORAGE_ENV: storage_url, STUDY_ENV: study.study_name})
        self.log = self.repo / ".dvc/tmp/inat-cnn-sweep-queue.log"
        self.in_flight: dict[int, str] = {}  # trial number -> experiment name
        self.lost: set[str] = set()  # queue tasks given up on (see stuck)
        self.suspects: dict[str, float] = {}  # queue task -> when first seen "Running" with nothing running it
        self.unserved = False  # a trial was queued with no worker to run it, at the last look
        self.summary = RunSummary(study.study_name, storage_url)

    # -- resuming

    def adopt(self) -> None:
        """This clone's running trials, left by an earlier driver: followed, collected or re-queued."""
        import optuna

        mine = [t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("dvc_repo") == self.me]
        if not mine:
            return
        refs, tasks = experiment_refs(self.repo), status_by_name(queue_tasks(self.repo))
        for t in mine:
            name = trial_name(self.study.study_name, t.number)
            self.in_flight[t.number] = name
            for _ in range(2):  # `dvc queue status` lists running, then queued entries: one that starts in between
                if name in refs or name in tasks:  # is in neither, so look again before queueing it twice
                    break
                time.sleep(1.0)
                tasks, refs = status_by_name(queue_tasks(self.repo)), experiment_refs(self.repo)
            if name in refs or name in tasks:
                print(f"resuming: trial {t.number} ({name}) is {'finished' if name in refs else tasks[name].status.lower()}", flush=True)
                continue
            print(f"resuming: trial {t.number} ({name}) was never queued or its queue entry is gone: queueing it again", flush=True)
            self.requeue(name, t.params)

    def requeue(self, name: str, params: dict[str, Any]) -> None:
        queue_experiment(config_of(self.sweep, params), repo=self.repo, name=name, targets=self.sweep.targets)
        self.summary.requeued.append(name)

    def stuck(self, task: Task) -> bool:
        """Whether a "Running" entry is one that nothing runs: a worker took it as it shut down (DVC's
        queue does not put such a message back) or died. True once no experiment process has run it
        for ``lost_after_s`` seconds, or at a second look when no queue worker is left at all."""
        if executor_alive(self.repo, task.rev):
            self.suspects.pop(task.rev, None)
            return False
        now = time.monotonic()
        since = self.suspects.setdefault(task.rev, now)
        return now - since >= self.lost_after_s or (now > since and not workers_alive(self.repo))

    def recover(self, number: int, name: str, task: Task) -> None:
        """A lost trial queued again under its name; DVC is told to mark the lost entry failed."""
        print(f"trial {number} ({name}): DVC's queue lost it (task {task.rev} is 'Running' but no process runs it): "
              "queueing it again", flush=True)
        self.lost.add(task.rev)
        try:
            dvc(["queue", "kill", task.rev], self.repo, f"marking the lost task {task.rev} failed")
        except UserError:
            pass  # the entry stays "Running" in `dvc queue status`; this driver ignores it either way
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.requeue(name, self.storage.get_trial(trial_id).params)
        start_workers(self.repo, self.jobs, self.env, self.log)

    # -- heartbeats

    def beat(self, force: bool = False) -> None:
        """A heartbeat for each trial in flight (every ``heartbeat_interval`` s): they are alive."""
        if self.beat_every is None or not (force or time.monotonic() - self.last_beat >= self.beat_every):
            return
        for number in self.in_flight:
            self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))
        self.last_beat = time.monotonic()

    def reap(self) -> None:
        """Fail the running trials whose driver stopped beating (:func:`retry_stale` re-asks them);
        this driver's own just beat."""
        import optuna

        if self.beat_every is None:
            return
        self.beat(force=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    # -- asking and telling

    def ask(self) -> None:
        with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize": this driver beats
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask(distributions(self.sweep))
        name = trial_name(self.study.study_name, trial.number)
        self.in_flight[trial.number] = name
        self.beat(force=True)  # from its first moment: a driver that dies now leaves a trial that goes stale
        trial.set_user_attr("dvc_exp", name)
        trial.set_user_attr("dvc_repo", self.me)
        config = config_of(self.sweep, trial.params)
        try:
            cmd = queue_experiment(config, repo=self.repo, name=name, targets=self.sweep.targets)
        except UserError:
            self.study.tell(trial.number, state=_state("FAIL"))
            del self.in_flight[trial.number]
            raise
        self.summary.names.append(name)
        print(f"trial {trial.number}: queued {' '.join(cmd[5:])}", flush=True)

    def tell(self, number: int, state: str, value: float | None = None, **attrs: Any) -> None:
        name = self.in_flight.pop(number)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        was = self.storage.get_trial(trial_id).state
        if was.is_finished():  # failed as stale by another driver while this one was away
            print(f"trial {number} ({name}): {state.lower()}, but the study has it {was.name.lower()} already "
                  "(no heartbeat for too long): not told", flush=True)
            return
        for key, val in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, val)
        self.study.tell(number, value if state == "COMPLETE" else None, state=_state(state))
        self.summary.told[state] = self.summary.told.get(state, 0) + 1
        shown = f" = {value:.4g}" if value is not None and state != "FAIL" else ""
        print(f"trial {number} ({name}): {state.lower()}{shown}" + (f" after epoch {attrs['pruned_after_epoch']}" if state == "PRUNED" else "")
              + (" (restored from DVC's run cache: this configuration ran before; no epoch trained)" if attrs.get("restored") else ""),
              flush=True)

    def collect(self, number: int, rev: str) -> None:
        """An experiment DVC committed: its metric told back (pruned or complete). A configuration
        run before (by any trial, or outside the study) is restored from DVC's run cache: the same
        result, no epoch trained (``restored``, ``epochs_run`` 0)."""
        file, key = parse_metric(self.sweep.metric)
        data = json_at(self.repo, rev, file)
        node = lookup(data, key)
        value = float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node) else None
        epochs, pruned = (lookup(data, training_key(self.sweep.metric, k)) for k in ("epochs", "pruned_at"))
        attrs: dict[str, Any] = {"dvc_rev": rev, "epochs_run": epochs}
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        if epochs and not self.storage.get_trial(trial_id).intermediate_values:  # a trial reports each epoch it
            attrs.update(epochs_run=0, restored=True)  # trains: none, so DVC restored a configuration run before
        if pruned is not None:
            self.tell(number, "PRUNED", value, pruned_after_epoch=pruned, **attrs)
        elif value is None:
            self.tell(number, "FAIL", fail_reason=f"the experiment has no {self.sweep.metric}", **attrs)
        else:
            self.tell(number, "COMPLETE", value, **attrs)

    def poll(self, with_status: bool) -> None:
        refs = experiment_refs(self.repo)
        for number, name in list(self.in_flight.items()):
            if name in refs:
                self.collect(number, refs[name])
        if not (with_status and self.in_flight):
            return
        tasks = status_by_name(queue_tasks(self.repo), self.lost)
        running = {t.rev for t in tasks.values() if t.status == "Running"}
        self.suspects = {rev: since for rev, since in self.suspects.items() if rev in running}  # the others moved on
        for number, name in list(self.in_flight.items()):
            task = tasks.get(name)
            if task is not None and task.status == "Failed":
                self.tell(number, "FAIL", fail_reason=f"the experiment failed: dvc queue logs {name}")
            elif task is not None and task.status == "Running" and self.stuck(task):
                self.recover(number, name, task)
        waiting = any(tasks[n].status == "Queued" for n in self.in_flight.values() if n in tasks)
        unserved = waiting and not workers_alive(self.repo)  # the last worker stopped as this driver queued;
        if unserved and self.unserved:  # at a second look: one just started has not written its process file
            start_workers(self.repo, self.jobs, self.env, self.log)
        self.unserved = unserved

    def count(self) -> int:
        """The study's trials towards ``--trials``: all but the waiting ones and those asked again."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
        return sum(1 for t in trials if t.state != _state("WAITING") and t.number not in retried)

    def run(self, trials: int) -> RunSummary:
        self.adopt()
        self.reap()
        started = False
        last_status = 0.0
        while True:
            queued = False
            while len(self.in_flight) < self.jobs and self.count() < trials:
                self.ask()
                queued = True
            if queued or (self.in_flight and not started):
                start_workers(self.repo, self.jobs, self.env, self.log)
                started = True
            if not self.in_flight:
                return self.summary
            time.sleep(self.poll_s)
            self.beat()
            now = time.monotonic()
            with_status = now - last_status >= self.status_every_s
            if with_status:
                last_status = now
                self.reap()
            self.poll(with_status)


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def run_sweep(sweep: Sweep, *, repo: Path, study_name: str, storage_url: str | None, trials: int, jobs: int,
              sampler: str = "tpe", pruner: str | None = None, seed: int | None = None, startup_trials: int = 10,
              poll_s: float = 2.0, stale_after: int = STALE_AFTER_S) -> tuple[Any, RunSummary]:
    """Run (or resume) ``study_name`` until it holds ``trials`` trials, ``jobs`` at a time. Every
    input is checked (study name, numbers, sampler, pruner, the storage, the swept keys) before
    anything is queued."""
    check_study_name(study_name)
    if trials < 1 or jobs < 1:
        raise UserError(f"--trials {trials} --jobs {jobs}: both must be positive")
    if stale_after < MIN_STALE_AFTER_S:
        raise UserError(f"--stale-after {stale_after}: at least {MIN_STALE_AFTER_S} (seconds); a driver is busy "
                        "for seconds at a time between heartbeats")
    if pruner is not None:
        make_pruner(pruner)
    built = make_sampler(sampler, sweep, seed, startup_trials, clone=_me(repo))
    if sampler == "grid" and trials > sweep.size:
        print(f"note: --trials {trials} > the grid's {sweep.size} configurations: running the grid once")
        trials = int(sweep.size)
    url = storage_url or default_storage_url(repo)
    storage = connect(url, **heartbeat_settings(stale_after))
    check_params_known(sweep, repo)
    study = open_study(sweep, study_name, storage, sampler=built, pruner=pruner)
    print(f"study {study_name} at {url}: {len(study.trials)} trial(s) so far; up to {trials}, {jobs} at a time "
          f"({sampler} sampler, {study.user_attrs[PRUNER_ATTR]} pruner)", flush=True)
    driver = Driver(study, storage, sweep, repo, url, jobs=jobs, poll_s=poll_s)
    return study, driver.run(trials)


def dry_run(sweep: Sweep, *, study_name: str, jobs: int, sampler: str, seed: int | None,
            repo: Path | None = None) -> list[list[str]]:
    """The first ``jobs`` commands the sampler would queue (an in-memory study; nothing is queued),
    with the seed mixed as ``sweep run`` in ``repo`` mixes it (none without a repo)."""
    optuna = quiet_optuna()

    check_study_name(study_name)
    built = make_sampler(sampler, sweep, seed, clone=_me(repo) if repo is not None else None)
    study = optuna.create_study(sampler=built, direction="maximize" if sweep.goal == "maximize" else "minimize")
    cmds = []
    for _ in range(jobs):
        trial = study.ask(distributions(sweep))
        cmds.append(queue_command(config_of(sweep, trial.params), trial_name(study_name, trial.number), sweep.targets))
    return cmds


def evaluate_best(study: Any, repo: Path) -> dict[str, Any]:
    """Apply the study's best trial (``dvc exp apply``) and run its evaluate stage (``dvc repro``):
    the test set, once per study; the result is recorded in the study."""
    done = study.user_attrs.get("test_evaluation")
    if done:
        raise UserError(f"study {study.study_name}: trial {done['trial']} ({done['exp']}) was already evaluated on the "
                        f"test set (accuracy {done['test_accuracy']:.4g}); the test set is measured once per study")
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {study.study_name}: no completed trial yet; run `inat-cnn sweep run` first") from None
    name = best.user_attrs.get("dvc_exp") or trial_name(study.study_name, best.number)
    test_metric = reported_test_metric(study.user_attrs.get("metric", ""))
    if test_metric is None:
        raise UserError(f"study {study.study_name}: its metric {study.user_attrs.get('metric')!r} names no training stage")
    file, key = parse_metric(test_metric)
    stage = Path(file).stem
    try:
        dvc(["exp", "apply", name], repo, f"applying {name} (run `dvc exp pull origin` first if it ran elsewhere)")
    except UserError as exc:
        if "Checkout failed" not in str(exc):
            raise
        # outputs of stages that never ran here (a sweep of train_scratch alone): `dvc repro` below
        # restores or re-runs whatever the evaluate stage needs
        print(f"note: `dvc exp apply {name}` could not check out the outputs of stages that never ran here", flush=True)
    dvc(["repro", stage], repo, f"evaluating {name} on the test set")
    data = json.loads((Path(repo) / file).read_text())
    result = {"trial": best.number, "exp": name, "val": best.value, "test_accuracy": float(data[key]), "stage": stage}
    study.set_user_attr("test_evaluation", result)
    return result
