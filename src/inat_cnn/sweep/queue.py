"""DVC's side of a sweep: queueing a configuration as an experiment, the queue's workers and state.

:func:`queue_experiment` queues one ``dvc exp run --queue -n NAME -S key=value ...``
(:func:`format_value` writes each value), :func:`start_workers` runs ``dvc queue start``,
:class:`QueueSnapshot` tells what became of each experiment at one look (:func:`experiment_refs`,
:func:`queue_tasks`; :func:`running_executors` and :func:`workers_alive`: whether anything still
runs it), and :func:`exp_show_json` reads the results back (``dvc exp show --json``) for the
report. Which configurations to try is Optuna's business (:mod:`.space`, :mod:`.driver`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError

_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
_RUN_DIR = ".dvc/tmp/exps/run"  # DVC's queue: one folder per running experiment (dvc-task's process files)
_WORKER_DIR = ".dvc/tmp/exps/celery"  # and the queue workers' process files


# ------------------------------------------------------------------------------------- queueing


def format_value(value: Any) -> str:
    """A value as ``-S key=VALUE`` text that DVC (Hydra's override grammar) and YAML both read
    back with the same type: true/false, 32, 0.001, 1.0e-05 (YAML 1.1 wants the dot and the
    exponent's sign), plain strings (quoted where they would read as something else), [a,b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"sweep: {value!r} cannot be passed to -S; use finite numbers")
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            mantissa += "" if "." in mantissa else ".0"
            exponent = exponent if exponent[0] in "+-" else "+" + exponent
            text = f"{mantissa}e{exponent}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        if _PLAIN_STRING.fullmatch(value) and yaml.safe_load(value) == value and value.lower() not in ("inf", "nan"):
            return value
        for quote in ("'", '"'):
            if quote not in value and not value.endswith("\\"):
                return f"{quote}{value}{quote}"
        raise UserError(f"sweep: the string {value!r} cannot be passed to -S (it holds both quote characters)")
    raise UserError(f"sweep: {value!r} ({type(value).__name__}) cannot be passed to -S; use numbers, booleans, strings or lists")


def _dvc(command: list[str]) -> list[str]:
    """``command`` (starting with "dvc") with the dvc executable beside this interpreter when
    ``dvc`` is not on PATH (a virtual environment used without activating it)."""
    if shutil.which("dvc"):
        return command
    beside = Path(sys.executable).parent / "dvc"
    return [str(beside) if beside.exists() else "dvc", *command[1:]]


def queue_command(config: dict[str, Any], name: str | None = None, targets: Sequence[str] = ()) -> list[str]:
    """The ``dvc exp run --queue`` command that queues one configuration."""
    cmd = ["dvc", "exp", "run", "--queue", *targets]
    if name:
        cmd += ["-n", name]
    for key, value in config.items():
        cmd += ["-S", f"{key}={format_value(value)}"]
    return cmd


def dvc(args: list[str], repo: Path, what: str, env: dict[str, str] | None = None) -> str:
    """Run ``dvc ARGS`` in ``repo`` and return its stdout; a failure is a :class:`UserError` that
    says ``what`` was being done and what dvc printed."""
    proc = subprocess.run(_dvc(["dvc", *args]), cwd=repo, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise UserError(f"sweep: {what}: `{shlex.join(['dvc', *args])}` failed with exit code {proc.returncode}: "
                        f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def queue_experiment(config: dict[str, Any], *, repo: Path, name: str, targets: Sequence[str] = ()) -> list[str]:
    """Queue one configuration as DVC experiment ``name`` (``dvc exp run --queue``); returns the command.

    Queued experiments run from the last commit plus the workspace's changes to tracked files;
    commit dvc.lock first so that unchanged stages (download, split) are skipped, not re-run.
    """
    cmd = queue_command(config, name, targets)
    dvc(cmd[1:], repo, f"queueing experiment {name}")
    return cmd


def start_workers(repo: Path, jobs: int, env: dict[str, str], log: Path) -> None:
    """``dvc queue start -j jobs`` with ``env``, which the workers (and every stage they run)
    inherit. A worker stops 10 s after the queue is empty, so this is called again after each
    queueing; it starts only the missing ones. Its output goes to ``log``: the detached workers
    keep the stdout they are given, and a pipe would block until they end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        proc = subprocess.run(_dvc(["dvc", "queue", "start", "-j", str(jobs)]), cwd=repo, env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise UserError(f"sweep: `dvc queue start -j {jobs}` failed with exit code {proc.returncode}; see {log}")


QUEUE_STATES = ("Queued", "Running", "Success", "Failed")
_RANK = {"Failed": 0, "Queued": 1, "Running": 2, "Success": 3}


@dataclass(frozen=True)
class Task:
    """One entry of ``dvc queue status``: its task (the stash commit's first 7 hex digits, as
    printed), the experiment's name and its state (one of :data:`QUEUE_STATES`)."""

    rev: str
    name: str
    status: str


def queue_tasks(repo: Path) -> list[Task]:
    """The queue's entries, from ``dvc queue status``."""
    out = dvc(["queue", "status"], repo, "reading the queue")
    rows = [line.split() for line in out.splitlines()]  # task, name, created (06:22 PM), status
    return [Task(r[0], r[1], r[-1]) for r in rows if len(r) >= 4 and r[-1] in QUEUE_STATES]


def status_by_name(tasks: list[Task], ignore: Collection[str] = ()) -> dict[str, Task]:
    """Each name's entry, leaving out the tasks in ``ignore``; where a name has several (one queued
    again after DVC's queue lost the first), the most advanced: Success, Running, Queued, Failed."""
    found: dict[str, Task] = {}
    for task in tasks:
        best = found.get(task.name)
        if task.rev not in ignore and (best is None or _RANK[task.status] >= _RANK[best.status]):
            found[task.name] = task
    return found


def _alive(info: Path) -> bool:
    """Whether the process a dvc-task ``<name>.json`` describes runs (not when the file is absent)."""
    try:
        data = json.loads(info.read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if data.get("returncode") is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_executors(repo: Path) -> frozenset[str]:
    """The stash revs whose ``dvc exp exec-run`` process runs (not before the queue starts it, nor
    after it ends): DVC's queue keeps it in ``.dvc/tmp/exps/run/<stash rev>/<stash rev>.json``."""
    return frozenset(d.name for d in (Path(repo) / _RUN_DIR).glob("*") if _alive(d / f"{d.name}.json"))


def workers_alive(repo: Path) -> bool:
    """Whether any of the repository's ``dvc exp queue-worker`` processes runs (from the files
    dvc-task keeps beside them, not celery's broadcast, which a busy machine fails to answer in time)."""
    return any(_alive(info) for info in (Path(repo) / _WORKER_DIR).glob("dvc-exp-worker-*.json"))


def experiment_refs(repo: Path) -> dict[str, str]:
    """Finished experiments: name -> commit, from git's ``refs/exps`` (``exp_show`` without dvc)."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], cwd=repo,
                         capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        rev, _, ref = line.partition(" ")
        if ref.count("/") >= 4:  # refs/exps/<2>/<38>/<name>; not refs/exps/exec/... nor the stash
            found[ref.rsplit("/", 1)[-1]] = rev
    return found


@dataclass(frozen=True)
class QueueSnapshot:
    """One look at what became of the experiments: the finished ones (git's ``refs/exps``) and, in
    a full look, each name's queue entry (one ``dvc queue status``), the running experiment
    processes and whether a queue worker runs (their process files). A driver takes one per poll
    (:meth:`take`) and every decision of that poll reads it."""

    refs: dict[str, str]  # finished experiment -> commit
    tasks: dict[str, Task] | None = None  # name -> queue entry (:func:`status_by_name`); None: not read
    executors: frozenset[str] = frozenset()  # stash revs whose experiment process runs
    workers: bool = False  # whether any queue worker runs

    @classmethod
    def take(cls, repo: Path, following: Collection[str] | None = None, *, with_status: bool = True,
             ignore: Collection[str] = ()) -> QueueSnapshot:
        """The refs; the queue's state too when ``with_status`` and (``following`` given: experiment
        names) one of ``following`` is unfinished (``dvc queue status`` costs about a CPU-second),
        leaving out the tasks in ``ignore``."""
        refs = experiment_refs(repo)
        unfinished = following is None or any(name not in refs for name in following)
        if not (with_status and unfinished):
            return cls(refs)
        return cls(refs, status_by_name(queue_tasks(repo), ignore), running_executors(repo), workers_alive(repo))

    def state_of(self, name: str) -> str | None:
        """``finished`` (a ref), else the queue entry's state (``queued``, ``running``...), else None."""
        if name in self.refs:
            return "finished"
        task = (self.tasks or {}).get(name)
        return task.status.lower() if task is not None else None

    def executor_alive(self, rev: str) -> bool:
        """Whether task ``rev``'s experiment process ran at this look (``rev``: a stash rev's prefix)."""
        return any(run.startswith(rev) for run in self.executors)


def json_at(repo: Path, rev: str, path: str) -> Any:
    """A JSON file of commit ``rev`` (an experiment's metrics file), or None where it is absent."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------ reading results


def exp_show_json(repo: Path) -> list:
    """Run ``dvc exp show --json`` in ``repo`` and parse it."""
    out = dvc(["exp", "show", "--json"], repo, "reading the experiments")
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise UserError(f"sweep: `dvc exp show --json` printed something that is not JSON: {exc}") from exc
