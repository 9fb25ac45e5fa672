"""Choosing a sweep's configurations and queueing them as DVC experiments.

:func:`grid` lists every combination of a :class:`~inat_cnn.sweep.spec.Sweep`, :func:`sample` a
seeded subset of them, and :func:`queue_experiments` queues one ``dvc exp run --queue -S
key=value ...`` per configuration (:func:`format_value` writes each value); ``dvc queue start``
runs them. :func:`exp_show_json` reads the results back (``dvc exp show --json``) for the report.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError
from .spec import Sweep

_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")


# ------------------------------------------------------------------------ choosing configurations


def _config_at(sweep: Sweep, index: int) -> dict[str, Any]:
    """The ``index``-th configuration of :func:`grid` (mixed radix, the last key fastest)."""
    config: dict[str, Any] = {}
    for key, values in reversed(sweep.params.items()):
        index, digit = divmod(index, len(values))
        config[key] = values[digit]
    return {key: config[key] for key in sweep.params}


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination, in a fixed order: the file's key order, the last key changing fastest."""
    keys = list(sweep.params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*sweep.params.values())]


def sample(sweep: Sweep, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct configurations of the grid, chosen with ``seed`` (W&B's ``method: random``
    without repeats). With ``n`` at least the grid's size: the whole grid in a seeded order."""
    if n < 1:
        raise UserError(f"sweep: --n = {n}; expected a positive number of experiments")
    size = sweep.size
    if n >= size:
        print(f"note: --n {n} >= the grid's {size} configurations: queueing the whole grid in a seeded order")
        n = size
    indices = random.Random(seed).sample(range(size), n)  # a range is never materialised
    return [_config_at(sweep, i) for i in indices]


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


def queue_experiments(
    configs: Sequence[dict[str, Any]],
    *,
    repo: Path,
    dry_run: bool = False,
    name_prefix: str | None = None,
    targets: Sequence[str] = (),
) -> list[list[str]]:
    """Queue one DVC experiment per configuration (named ``{name_prefix}-{i}``, i from 1, when a
    prefix is given) and return the commands. ``dry_run`` prints them and runs nothing.

    Queued experiments run from the last commit plus the workspace's changes to tracked files;
    commit dvc.lock first so that unchanged stages (download, split) are skipped, not re-run.
    """
    commands = [
        queue_command(config, f"{name_prefix}-{i}" if name_prefix else None, targets)
        for i, config in enumerate(configs, start=1)
    ]
    for i, cmd in enumerate(commands, start=1):
        print(f"{'would queue' if dry_run else 'queueing'} {i}/{len(commands)}: {shlex.join(cmd)}", flush=True)
        if dry_run:
            continue
        proc = subprocess.run(_dvc(cmd), cwd=repo, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise UserError(
                f"sweep: `{shlex.join(cmd)}` failed with exit code {proc.returncode} after {i - 1} queued "
                f"experiment(s):\n{(proc.stderr or proc.stdout).strip()}"
            )
    if commands and not dry_run:
        print(f"queued {len(commands)} experiment(s); run them with `dvc queue start` (-j N for N at once), "
              "follow with `dvc queue status`, then `inat-cnn sweep report`")
    return commands


# ------------------------------------------------------------------------------ reading results


def exp_show_json(repo: Path) -> list:
    """Run ``dvc exp show --json`` in ``repo`` and parse it."""
    proc = subprocess.run(_dvc(["dvc", "exp", "show", "--json"]), cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"sweep report: `dvc exp show --json` failed:\n{(proc.stderr or proc.stdout).strip()}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise UserError(f"sweep report: `dvc exp show --json` printed something that is not JSON: {exc}") from exc
