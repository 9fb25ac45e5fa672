"""``inat-cnn sweep queue`` and ``inat-cnn sweep report``: the argparse commands over
:mod:`.spec` (the sweep file), :mod:`.queue` (configurations, ``dvc exp run --queue``) and
:mod:`.report` (the ranking by a validation metric, ``reports/sweep.md``, ``plots/sweep/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .queue import exp_show_json, grid, queue_experiments, sample
from .report import sweep_report
from .results import DEFAULT_METRIC, metric_label, parse_metric, refuse_test_metric
from .spec import load_sweep


def _cmd_queue(args: argparse.Namespace) -> None:
    sweep = load_sweep(args.sweep_file)
    if args.method == "grid":
        configs = grid(sweep)
    else:
        configs = sample(sweep, args.n, args.seed)
    print(f"{args.sweep_file}: {len(sweep.params)} params, a grid of {sweep.size}; "
          f"queueing {len(configs)} ({args.method})" + (f" with targets {' '.join(sweep.targets)}" if sweep.targets else ""))
    queue_experiments(configs, repo=Path.cwd(), dry_run=args.dry_run, name_prefix=args.name_prefix, targets=sweep.targets)


def _cmd_report(args: argparse.Namespace) -> None:
    if args.metric:  # before anything runs: the test set ranks nothing
        parse_metric(args.metric, where="sweep report --metric")
        refuse_test_metric(args.metric, where="sweep report --metric")
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
    print(f"best by {metric_label(metric)} ({metric}): {best['name']} = {best['value']:.4g}")
    print(f"next: `dvc exp apply {best['name']}`, then `dvc repro` to evaluate the chosen configuration once on the test set")
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
        description="Read `dvc exp show --json`, rank the finished experiments by a validation metric and write "
        "the metric-vs-created, parallel-coordinates and importance figures and a Markdown report. A metric "
        "computed from the test split (metrics/evaluate_*.json, metrics/compare.json) is refused.",
    )
    report.add_argument("--metric", metavar="FILE:KEY",
                        help=f"what to rank by, a validation metric (default: the sweep file's metric, else "
                        f"{DEFAULT_METRIC}); test-split metrics are refused")
    report.add_argument("--sweep", metavar="SWEEP_FILE", help="only its params count as swept; its metric and goal are the defaults")
    report.add_argument("--minimize", action="store_true", help="lower is better (a loss)")
    report.add_argument("--top", type=int, default=10, help="rows in the report's top table (default: 10)")
    report.add_argument("--out", default="plots/sweep", help="figure folder (default: plots/sweep)")
    report.add_argument("--md", default="reports/sweep.md", help="report file (default: reports/sweep.md)")
    report.set_defaults(func=_cmd_report)
    return sweep

