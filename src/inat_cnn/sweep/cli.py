"""Hyper-parameter sweeps through DVC's experiment queue.

A sweep file (``sweeps/*.yaml``) names params.yaml keys and the values to try::

    metric: metrics/evaluate_scratch.json:accuracy   # FILE:KEY the report ranks by
    goal: maximize                                   # or minimize (a loss)
    targets: [evaluate_scratch]                      # stages each experiment reproduces (default: all)
    params:
      train.lr: [1.0e-2, 1.0e-3, 1.0e-4]
      model.activation: [relu, gelu]

:func:`grid` lists every combination, :func:`sample` a seeded subset of them, and
:func:`queue_experiments` queues one ``dvc exp run --queue -S key=value ...`` per configuration;
``dvc queue start`` runs them. ``inat-cnn sweep report`` (:mod:`inat_cnn.sweep_report`) ranks
the finished experiments. The library never reads params.yaml: it reads the sweep file it is given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError
from .report import sweep_report
from .results import DEFAULT_METRIC, parse_metric

GOALS = ("maximize", "minimize")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")


# ------------------------------------------------------------------------------ the sweep file


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
    unknown = sorted(set(data) - {"params", "metric", "goal", "targets"})
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
    goal = data.get("goal", "maximize")
    if goal not in GOALS:
        raise UserError(f"{path}: goal = {goal!r}; expected maximize or minimize")
    targets = data.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise UserError(f"{path}: targets = {targets!r}; expected a list of stage names")
    return Sweep(params=dict(params), metric=metric, goal=goal, targets=tuple(targets), path=path)



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


# ------------------------------------------------------------------------------------------ CLI


def _cmd_queue(args: argparse.Namespace) -> None:
    sweep = load_sweep(args.sweep_file)
    if args.method == "grid":
        configs = grid(sweep)
    else:
        configs = sample(sweep, args.n, args.seed)
    print(f"{args.sweep_file}: {len(sweep.params)} params, a grid of {sweep.size}; "
          f"queueing {len(configs)} ({args.method})" + (f" with targets {' '.join(sweep.targets)}" if sweep.targets else ""))
    queue_experiments(configs, repo=Path.cwd(), dry_run=args.dry_run, name_prefix=args.name_prefix, targets=sweep.targets)


def exp_show_json(repo: Path) -> list:
    """Run ``dvc exp show --json`` in ``repo`` and parse it."""
    proc = subprocess.run(_dvc(["dvc", "exp", "show", "--json"]), cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"sweep report: `dvc exp show --json` failed:\n{(proc.stderr or proc.stdout).strip()}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise UserError(f"sweep report: `dvc exp show --json` printed something that is not JSON: {exc}") from exc


def _cmd_report(args: argparse.Namespace) -> None:
    sweep = load_sweep(args.sweep) if args.sweep else None
    metric = args.metric or (sweep.metric if sweep else DEFAULT_METRIC)
    goal = "minimize" if args.minimize else (sweep.goal if sweep else "maximize")
    result = sweep_report(
        exp_show_json(Path.cwd()), metric, Path(args.out), Path(args.md),
        keys=list(sweep.params) if sweep else None, higher_is_better=goal == "maximize", top=args.top,
    )
    best = result["best"]
    print(f"{result['used']} experiments used, {result['failed']} failed, {result['queued']} queued, "
          f"{result['running']} running")
    print(f"best: {best['name']} with {metric} = {best['value']:.4g}; apply it with `dvc exp apply {best['name']}`")
    print(f"wrote {result['report']} and {', '.join(result['figures'])}")


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sweep queue`` and ``sweep report`` on the CLI's subparsers; returns ``sweep``'s parser."""
    sweep = subparsers.add_parser(
        "sweep", help="queue a hyper-parameter sweep as DVC experiments, and report on it",
        description="Queue DVC experiments from a sweep file (sweeps/*.yaml), run them with `dvc queue start`, "
        "then rank them with `sweep report`.",
    )
    sub = sweep.add_subparsers(dest="sweep_command", metavar="COMMAND", required=True)
    queue = sub.add_parser(
        "queue", help="queue one `dvc exp run --queue -S ...` per configuration of a sweep file",
        description="Queue a grid or a seeded random sample of a sweep file's configurations as DVC experiments. "
        "Commit dvc.lock first; then `dvc queue start -j 1` runs them and `dvc queue status` follows them.",
    )
    queue.add_argument("sweep_file", metavar="SWEEP_FILE", help="e.g. sweeps/scratch.yaml")
    queue.add_argument("--method", choices=("grid", "random"), default="grid",
                       help="grid: every combination; random: --n distinct ones (default: grid)")
    queue.add_argument("--n", type=int, default=50, help="random: how many experiments (default: 50)")
    queue.add_argument("--seed", type=int, default=0, help="random: the sample's seed (default: 0)")
    queue.add_argument("--dry-run", action="store_true", help="print the dvc commands, queue nothing")
    queue.add_argument("--name-prefix", metavar="P", help="name the experiments P-1, P-2, ... (default: DVC's names)")
    queue.set_defaults(func=_cmd_queue)
    report = sub.add_parser(
        "report", help="rank finished experiments; write plots/sweep/*.png and reports/sweep.md",
        description="Read `dvc exp show --json`, rank the finished experiments by a metric and write the "
        "metric-vs-created, parallel-coordinates and importance figures and a Markdown report.",
    )
    report.add_argument("--metric", metavar="FILE:KEY",
                        help=f"what to rank by (default: the sweep file's metric, else {DEFAULT_METRIC})")
    report.add_argument("--sweep", metavar="SWEEP_FILE", help="only its params count as swept; its metric and goal are the defaults")
    report.add_argument("--minimize", action="store_true", help="lower is better (a loss)")
    report.add_argument("--top", type=int, default=10, help="rows in the report's top table (default: 10)")
    report.add_argument("--out", default="plots/sweep", help="figure folder (default: plots/sweep)")
    report.add_argument("--md", default="reports/sweep.md", help="report file (default: reports/sweep.md)")
    report.set_defaults(func=_cmd_report)
    return sweep

