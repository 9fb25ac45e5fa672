"""``inat-cnn sweep run``, ``sweep report`` and ``sweep best``: the argparse commands over
:mod:`.spec` (the sweep file), :mod:`.driver` (Optuna proposes, DVC's queue runs), :mod:`.report`
(the ranking by a validation metric, ``reports/sweep.md``, ``plots/sweep/``) and :mod:`.best`
(the best trial, once on the test set).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.outputs import SWEEP_MD, SWEEP_PLOTS
from .pruning import DEFAULT_PRUNER, PRUNERS
from .queue import exp_show_json
from .report import sweep_report
from .metric import DEFAULT_METRIC, metric_label, parse_metric, refuse_test_metric
from .space import SAMPLERS
from .spec import load_sweep
from .storage import DEFAULT_STORAGE, STALE_AFTER_S


def _cmd_run(args: argparse.Namespace) -> None:
    from .driver import dry_run, run_sweep

    sweep = load_sweep(args.sweep_file)
    name = args.study or Path(args.sweep_file).stem
    if args.dry_run:
        for cmd in dry_run(sweep, study_name=name, jobs=args.jobs, sampler=args.sampler, seed=args.seed, repo=Path.cwd()):
            print(f"would queue: {shlex.join(cmd)}")
        return
    study, summary = run_sweep(
        sweep, repo=Path.cwd(), study_name=name, storage_url=args.storage, trials=args.trials, jobs=args.jobs,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed, startup_trials=args.startup_trials,
        poll_s=args.poll, stale_after=args.stale_after,
    )
    told = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.told.items())) or "nothing new"
    print(f"study {summary.study}: {len(study.trials)} trial(s); this run: {told}")
    _print_best(study)
    if any(t.state.name == "COMPLETE" for t in study.trials):  # the study's report, for `dvc repro report`
        try:
            _write_report(study, sweep, sweep.metric, sweep.goal, SWEEP_PLOTS, SWEEP_MD, top=10)
        except UserError as exc:  # the study is done either way: e.g. `dvc exp show` tripped over another run's files
            print(f"the sweep report could not be written now ({exc}); run `inat-cnn sweep report`", flush=True)


def _print_best(study) -> None:
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return
    print(f"best trial {best.number} ({best.user_attrs.get('dvc_exp')}): {best.value:.4g} with {best.params}")
    print(f"next: `inat-cnn sweep best --evaluate` (dvc exp apply {best.user_attrs.get('dvc_exp')} + the test set, "
          f"once); `dvc repro report` puts the sweep in reports/index.html")


def _study_for(args: argparse.Namespace, sweep) -> Any:
    """The study a report or `sweep best` reads: --study (default: the sweep file's name) in
    --storage (default: the repository's file); None without a study to read."""
    from .storage import connect, default_storage_url

    url = args.storage or default_storage_url(Path.cwd())
    if args.storage is None and not (Path.cwd() / DEFAULT_STORAGE).is_file():
        if args.study:
            raise UserError(f"--study {args.study}: there is no study storage here ({DEFAULT_STORAGE}); give --storage URL")
        return None
    import optuna

    storage = connect(url)
    names = [s.study_name for s in storage.get_all_studies()]
    name = args.study or (sweep.path.stem if sweep else (names[-1] if names else None))
    if name not in names:
        if args.study or args.storage:
            raise UserError(f"--study {name}: no such study at {url}; studies there: {', '.join(names) or 'none'}")
        return None
    return optuna.load_study(study_name=name, storage=storage)


def _cmd_report(args: argparse.Namespace) -> None:
    if args.metric:  # before anything runs: the test set ranks nothing
        parse_metric(args.metric, where="sweep report --metric")
        refuse_test_metric(args.metric, where="sweep report --metric")
    sweep = load_sweep(args.sweep) if args.sweep else None
    study = _study_for(args, sweep)
    metric = args.metric or (sweep.metric if sweep else study.user_attrs.get("metric", DEFAULT_METRIC) if study else DEFAULT_METRIC)
    goal = "minimize" if args.minimize else (sweep.goal if sweep else study.direction.name.lower() if study else "maximize")
    if study is not None:
        print(f"study {study.study_name}: {len(study.trials)} trial(s)")
    _write_report(study, sweep, metric, goal, Path(args.out), Path(args.md), top=args.top)


def _write_report(study: Any, sweep: Any, metric: str, goal: str, out: Path, md: Path, *, top: int) -> None:
    """Rank the experiments by ``metric``, write ``md`` and ``out``/*.png, and print what was found."""
    result = sweep_report(
        exp_show_json(Path.cwd()), metric, out, md,
        keys=list(sweep.params) if sweep else None, higher_is_better=goal == "maximize", top=top, study=study,
    )
    best = result["best"]
    print(f"{result['used']} experiments used, {result['pruned']} pruned, {result['failed']} failed, {result['queued']} queued, "
          f"{result['running']} running" + (f"; {result['epochs']} epochs spent by {result['trials']} trials" if study else ""))
    print(f"best by {metric_label(metric)} ({metric}): {best['name']} = {best['value']:.4g}")
    print(f"next: `dvc exp apply {best['name']}`, then `dvc repro` to evaluate the chosen configuration once on the test set"
          + (" (or `inat-cnn sweep best --evaluate`)" if study else ""))
    print(f"wrote {result['report']} and {', '.join(result['figures'])}")


def _cmd_best(args: argparse.Namespace) -> None:
    sweep = load_sweep(args.sweep) if args.sweep else None
    study = _study_for(args, sweep)
    if study is None:
        raise UserError("sweep best: no study here; run `inat-cnn sweep run SWEEP_FILE` first, or give --study/--storage")
    if not args.evaluate:
        _print_best(study)
        return
    from .best import evaluate_best

    result = evaluate_best(study, Path.cwd())
    print(f"trial {result['trial']} ({result['exp']}) applied and evaluated once on the test set: "
          f"accuracy {result['test_accuracy']:.4g} (validation {result['val']:.4g}); recorded in the study")


def _study_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", metavar="NAME", help="the Optuna study (default: the sweep file's name, e.g. scratch)")
    parser.add_argument("--storage", metavar="URL", help=f"the Optuna storage (default: sqlite in this repository, "
                        f"{DEFAULT_STORAGE}; postgresql://... for several machines)")


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sweep run``, ``sweep report`` and ``sweep best`` on the CLI's subparsers; returns ``sweep``'s parser."""
    sweep = subparsers.add_parser(
        "sweep", help="a hyper-parameter study: Optuna proposes, DVC's queue runs, the report ranks by validation",
        description="Run an Optuna study whose trials are DVC experiments (sweeps/*.yaml), report on it, and "
        "evaluate the best trial once on the test set.",
    )
    sub = sweep.add_subparsers(dest="sweep_command", metavar="COMMAND", required=True)
    _add_run(sub)
    _add_report(sub)
    _add_best(sub)
    return sweep


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="run (or resume) a study: each trial a `dvc exp run --queue` experiment, J at a time",
        description="Optuna asks for configurations; each trial is queued as the DVC experiment <study>-t<N> and "
        "run by `dvc queue start -j J` workers; its validation metric is told back, and unpromising trials are "
        "pruned while they train. Commit params.yaml and dvc.lock first. Starting it again resumes the study.",
    )
    run.add_argument("sweep_file", metavar="SWEEP_FILE", help="e.g. sweeps/scratch.yaml")
    run.add_argument("--trials", type=int, default=20, help="the study's size: trials in all, every machine's (default: 20)")
    run.add_argument("--jobs", "-j", type=int, default=1, help="trials in flight = queue workers (default: 1)")
    run.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (constant liar; default), random or grid")
    run.add_argument("--pruner", metavar="P", help=f"{', '.join(PRUNERS)} or below:X (default: a resumed study's own, "
                     f"a new study's {DEFAULT_PRUNER})")
    run.add_argument("--seed", type=int, default=0, help="the sampler's seed; tpe's and random's are mixed with this clone's "
                     "host and path so machines sharing a study draw different sequences (default: 0)")
    run.add_argument("--startup-trials", type=int, default=10, help="tpe: random trials before TPE starts (default: 10)")
    run.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the queue (default: 2)")
    run.add_argument("--stale-after", type=int, default=STALE_AFTER_S, metavar="SECONDS",
                     help="fail a running trial whose driver (any machine's) sent no heartbeat for this long, and ask "
                     f"its configuration again (default: {STALE_AFTER_S})")
    run.add_argument("--dry-run", action="store_true", help="print the first J commands the sampler would queue, queue nothing")
    _study_flags(run)
    run.set_defaults(func=_cmd_run)


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report", help="rank finished experiments; write plots/sweep/*.png and reports/sweep.md",
        description="Read the study (when there is one) and `dvc exp show --json`, rank the finished experiments by "
        "a validation metric and write the metric-vs-created, parallel-coordinates, importance and trial-curve "
        "figures and a Markdown report. A metric computed from the test split (metrics/evaluate_*.json, "
        "metrics/details/evaluate_*.json, metrics/details/compare.json) is refused.",
    )
    report.add_argument("--metric", metavar="FILE:KEY",
                        help=f"what to rank by, a validation metric (default: the sweep file's or study's metric, else "
                        f"{DEFAULT_METRIC}); test-split metrics are refused")
    report.add_argument("--sweep", metavar="SWEEP_FILE", help="only its params count as swept; its metric, goal and name are the defaults")
    report.add_argument("--minimize", action="store_true", help="lower is better (a loss)")
    report.add_argument("--top", type=int, default=10, help="rows in the report's top table (default: 10)")
    report.add_argument("--out", default=str(SWEEP_PLOTS), help=f"figure folder (default: {SWEEP_PLOTS})")
    report.add_argument("--md", default=str(SWEEP_MD), help=f"report file (default: {SWEEP_MD})")
    _study_flags(report)
    report.set_defaults(func=_cmd_report)


def _add_best(sub: argparse._SubParsersAction) -> None:
    best = sub.add_parser(
        "best", help="name the study's best trial; --evaluate applies it and measures it once on the test set",
        description="The best completed trial by the study's validation metric. With --evaluate: `dvc exp apply` it, "
        "`dvc repro` its evaluate stage (the test set, once per study) and record the test accuracy in the study.",
    )
    best.add_argument("--sweep", metavar="SWEEP_FILE", help="the study's sweep file (its name is the default study)")
    best.add_argument("--evaluate", action="store_true", help="apply the best trial and evaluate it on the test set")
    _study_flags(best)
    best.set_defaults(func=_cmd_best)
