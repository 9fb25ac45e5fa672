"""Optuna proposes, DVC's queue runs: the study driver behind ``inat-cnn sweep run``.

An Optuna study (in an Optuna storage: by default the git-ignored SQLite file
:data:`.storage.DEFAULT_STORAGE` of the repository, or a PostgreSQL URL shared by several machines)
asks for configurations with one of :data:`.space.SAMPLERS`; each trial becomes the DVC experiment
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
again (:meth:`Driver.stuck`, :meth:`Driver.recover`). Each poll reads the queue once, one
:class:`~.queue.QueueSnapshot` that all of its decisions use.

Several machines, one study: each clone runs the same ``sweep run`` against one shared storage
(PostgreSQL). Trial numbers are the study's (Optuna numbers them under a lock), so experiment
names never collide; the sampler's seed is mixed with the clone's id (:func:`.space.clone_seed`),
so two machines given the same ``--seed`` do not propose the same sequence. Each driver beats a heartbeat
for its trials in flight (Optuna's RDBStorage heartbeat, on the database's clock); a trial whose
driver stopped beating for ``--stale-after`` seconds is failed by whichever driver notices, and its
configuration is asked again (:func:`.storage.retry_stale`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.threads import split_cores
from .metric import lookup, parse_metric, training_key
from .pruning import PRUNER_ATTR, STORAGE_ENV, STUDY_ENV, make_pruner, quiet_optuna, trial_name
from .queue import QueueSnapshot, Task, dvc, json_at, queue_command, queue_experiment, start_workers
from .space import clone_id, config_of, distributions, make_sampler
from .spec import Sweep
from .storage import MIN_STALE_AFTER_S, RETRY_ATTR, STALE_AFTER_S, connect, default_storage_url, heartbeat_settings
from .study import check_params_known, check_study_name, open_study

LOST_AFTER_S = 90.0
"""Seconds a queue entry may stay "Running" with no process running it (a worker sets an experiment up
before it starts, and collects it after) before the driver takes it as lost and queues it again."""
NO_WORKER_GRACE_S = 15.0
"""The same when no queue worker seems to run. Not at once: on a busy machine a worker that has just taken
the entry may not have started its experiment yet, and `dvc queue start` may start a second worker under
the same name (its ping went unanswered) whose exit marks the first one's process file stopped."""


def lost(waited_s: float, workers: bool, lost_after_s: float = LOST_AFTER_S) -> bool:
    """Whether a "Running" queue entry that no experiment process has run for ``waited_s`` seconds is lost."""
    return waited_s >= lost_after_s or (not workers and waited_s >= NO_WORKER_GRACE_S)


@dataclass
class RunSummary:
    study: str
    told: dict[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL -> count, this run


class Driver:
    """Keeps ``jobs`` trials in flight until the study holds ``trials`` finished ones."""

    def __init__(self, study: Any, storage: Any, sweep: Sweep, repo: Path, storage_url: str, *, jobs: int,
                 poll_s: float = 2.0, status_every_s: float = 6.0, lost_after_s: float = LOST_AFTER_S) -> None:
        self.study, self.storage, self.sweep, self.repo, self.jobs = study, storage, sweep, Path(repo), jobs
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.poll_s, self.status_every_s, self.lost_after_s = poll_s, status_every_s, lost_after_s
        self.beat_every = storage.get_heartbeat_interval()  # None: no heartbeats (a storage opened without)
        self.last_beat = -math.inf
        self.me = clone_id(repo)
        # the workers split the cores (one OpenMP thread per core in each of J trainings is 20x slower)
        self.env = dict(os.environ, **split_cores(jobs), **{STORAGE_ENV: storage_url, STUDY_ENV: study.study_name})
        self.log = self.repo / ".dvc/tmp/inat-cnn-sweep-queue.log"
        self.in_flight: dict[int, str] = {}  # trial number -> experiment name
        self.lost: set[str] = set()  # queue tasks given up on (see stuck)
        self.suspects: dict[str, float] = {}  # queue task -> when first seen "Running" with nothing running it
        self.unserved = False  # a trial was queued with no worker to run it, at the last look
        self.summary = RunSummary(study.study_name)

    # -- resuming

    def adopt(self) -> None:
        """This clone's running trials, left by an earlier driver: followed, collected or re-queued."""
        import optuna

        mine = [t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("dvc_repo") == self.me]
        if not mine:
            return
        look = QueueSnapshot.take(self.repo)
        for t in mine:
            name = trial_name(self.study.study_name, t.number)
            self.in_flight[t.number] = name
            for _ in range(2):  # `dvc queue status` lists running, then queued entries: one that starts in between
                if look.state_of(name):  # is in neither, so look again before queueing it twice
                    break
                time.sleep(1.0)
                look = QueueSnapshot.take(self.repo)
            if look.state_of(name):
                print(f"resuming: trial {t.number} ({name}) is {look.state_of(name)}", flush=True)
                continue
            print(f"resuming: trial {t.number} ({name}) was never queued or its queue entry is gone: queueing it again", flush=True)
            self.requeue(name, t.params)

    def requeue(self, name: str, params: dict[str, Any]) -> None:
        queue_experiment(config_of(self.sweep, params), repo=self.repo, name=name, targets=self.sweep.targets)

    def stuck(self, task: Task, look: QueueSnapshot) -> bool:
        """Whether a "Running" entry is one that nothing runs: a worker took it as it shut down (DVC's
        queue does not put such a message back) or died (see :func:`lost`)."""
        if look.executor_alive(task.rev):
            self.suspects.pop(task.rev, None)
            return False
        now = time.monotonic()
        return lost(now - self.suspects.setdefault(task.rev, now), look.workers, self.lost_after_s)

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
        this driver's own beat at least every ``heartbeat_interval``, well inside ``--stale-after``."""
        import optuna

        if self.beat_every is None:
            return
        self.beat()
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
        """One look at the queue (:class:`~.queue.QueueSnapshot`; its state only ``with_status``):
        finished trials collected, failed ones told, lost ones queued again, workers started where
        a trial waits with none left."""
        look = QueueSnapshot.take(self.repo, self.in_flight.values(), with_status=with_status, ignore=self.lost)
        for number, name in list(self.in_flight.items()):
            if name in look.refs:
                self.collect(number, look.refs[name])
        if look.tasks is None:
            return
        tasks = look.tasks
        running = {t.rev for t in tasks.values() if t.status == "Running"}
        self.suspects = {rev: since for rev, since in self.suspects.items() if rev in running}  # the others moved on
        restarted = False
        for number, name in list(self.in_flight.items()):
            task = tasks.get(name)
            if task is not None and task.status == "Failed":
                self.tell(number, "FAIL", fail_reason=f"the experiment failed: dvc queue logs {name}")
            elif task is not None and task.status == "Running" and self.stuck(task, look):
                self.recover(number, name, task)
                restarted = True
        if restarted:  # once for all the trials queued again; they started after this look
            start_workers(self.repo, self.jobs, self.env, self.log)
        waiting = any(tasks[n].status == "Queued" for n in self.in_flight.values() if n in tasks)
        unserved = waiting and not (look.workers or restarted)  # the last worker stopped as this driver queued;
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
    built = make_sampler(sampler, sweep, seed, startup_trials, clone=clone_id(repo))
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
    built = make_sampler(sampler, sweep, seed, clone=clone_id(repo) if repo is not None else None)
    study = optuna.create_study(sampler=built, direction="maximize" if sweep.goal == "maximize" else "minimize")
    cmds = []
    for _ in range(jobs):
        trial = study.ask(distributions(sweep))
        cmds.append(queue_command(config_of(sweep, trial.params), trial_name(study_name, trial.number), sweep.targets))
    return cmds

