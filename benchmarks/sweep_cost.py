"""What `inat-cnn sweep run` costs beyond training: the sweep machinery's time per trial.

A throwaway git repository is made from the project's committed HEAD (git archive), so the
workspace, its dvc.lock, study and experiments are never touched. In that copy:

  1. set-up (timed, reported apart): `dvc repro prepare` (download, split, prepare: the stages
     no trial varies) and its dvc.lock committed, so that every trial restores them;
  2. the sweep (timed): `inat-cnn sweep run` of a grid of train.lr x model.activation with
     train.epochs=E (targets: train_scratch, --sampler grid --pruner none, so every trial
     trains all its epochs), --trials N --jobs J, from start to exit (its final report included).

Every stage's cmd is wrapped, in the copy's dvc.yaml, so that it appends its start and end time
and the experiment's name ($DVC_EXP_NAME) to a log outside the copy: the stage commands' own
wall time (Python start, imports, training: the project's work). The rest of the sweep's worker
time is the machinery (study, sampler, queueing, `dvc queue start`, each experiment's temporary
workspace, checkout, commit, the driver's polls, the report):

    overhead per trial = (J x sweep wall - stage commands' seconds) / N
    overhead share     = 1 - stage commands' seconds / (J x sweep wall)

The driver's CPU seconds (itself and the dvc commands it waits for, not the queue's workers)
are the cost of its polling. Run:  python benchmarks/sweep_cost.py   (--tiny for a quick check)
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import optuna
import yaml

from project_copy import commit, machine_line, make_copy, set_params, stage_events, stop_workers, timed, tool_env, wrap_commands

from inat_cnn.sweep.queue import QueueSnapshot
from inat_cnn.sweep.storage import default_storage_url

GRID = {"train.lr": [1.0e-3, 3.0e-4], "model.activation": ["relu", "gelu"]}
TINY_PARAMS = {  # --tiny: seconds per trial instead of a minute (the copy's params.yaml, not swept)
    "data.synthetic.train_per_class": 6, "data.synthetic.test_per_class": 3, "data.synthetic.min_side": 48,
    "data.synthetic.max_side": 72, "model.input_size": 32, "model.blocks": 3, "model.filters": 8,
    "model.dense_units": 16, "train.batch_size": 8, "prepare.side": 32,
}


def prepare_copy(copy: Path, tiny: bool, stage_log: Path, env: dict[str, str]) -> float:
    """HEAD's tree as a git repository whose stages log their times, set-up reproduced and
    committed (so that every trial restores it, not re-runs it); returns the set-up's seconds."""
    make_copy(copy, env)
    if tiny:
        set_params(copy, TINY_PARAMS)
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    wrap_commands(copy, stages, list(stages), stage_log)
    (copy / "dvc.lock").unlink(missing_ok=True)
    timed(["git", "init", "-q"], copy, env)
    commit(copy, "HEAD copy, stages timed", env)
    setup = timed(["dvc", "repro", "prepare"], copy, env)
    commit(copy, "set-up stages locked", env)
    return setup


def stage_spans(log: Path, names: set[str]) -> dict[str, float]:
    """{experiment: seconds of its stage commands that ended with exit code 0}."""
    starts, spent = {}, dict.fromkeys(names, 0.0)
    for exp, stage, event, stamp, rc in stage_events(log):
        if exp in names and event == "start":
            starts[exp, stage] = stamp
        elif exp in names:
            start = starts.pop((exp, stage))
            if rc == "0":
                spent[exp] += stamp - start
    return spent


def sweep(copy: Path, root: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float]:
    """`inat-cnn sweep run` of the grid; its wall seconds and the driver's CPU seconds."""
    sweep_file = root / "cost.yaml"
    params = {**GRID, "train.epochs": [args.epochs]}
    sweep_file.write_text(yaml.safe_dump({"targets": ["train_scratch"], "params": params}, sort_keys=False))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(["inat-cnn", "sweep", "run", str(sweep_file), "--study", "cost", "--trials", str(args.trials),
                "--jobs", str(args.jobs), "--sampler", "grid", "--pruner", "none", "--poll", str(args.poll)], copy, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def report(copy: Path, stage_log: Path, args: argparse.Namespace, wall: float, cpu: float, setup: float) -> None:
    """One line per trial (its state, config, stage seconds), then the totals."""
    trials = optuna.load_study(study_name="cost", storage=default_storage_url(copy)).get_trials(deepcopy=False)
    names = {t.user_attrs["dvc_exp"] for t in trials}
    look = QueueSnapshot.take(copy)  # inat_cnn.sweep.queue: git's refs/exps and `dvc queue status`, as the driver reads them
    missing = {name: look.state_of(name) for name in names if name not in look.refs}
    if missing:
        sys.exit(f"sweep_cost.py: trials whose experiment was not committed (their queue state): {missing}")
    spent = stage_spans(stage_log, names)
    print(f"\n{'trial':<10}{'state':<10}{'config':<34}{'stages s':>9}")
    for t in trials:
        config = " ".join(f"{k.split('.')[-1]}={v}" for k, v in t.params.items() if k in GRID)
        print(f"{t.user_attrs['dvc_exp']:<10}{t.state.name.lower():<10}{config:<34}{spent[t.user_attrs['dvc_exp']]:>9.1f}")
    stages, slots = sum(spent.values()), args.jobs * wall
    print(f"\nset-up (dvc repro prepare, not counted): {setup:.1f} s")
    print(f"sweep run wall: {wall:.1f} s for {len(trials)} trials, {args.jobs} at a time; stage commands {stages:.1f} s")
    print(f"stage commands per trial: {stages / len(trials):.1f} s; overhead per trial: {(slots - stages) / len(trials):.1f} "
          f"worker-slot s; overhead share: {1 - stages / slots:.1%}")
    print(f"driver CPU (inat-cnn sweep run and the dvc commands it waited for): {cpu:.1f} s, {cpu / wall:.1%} of its wall")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4, help="trials (the first N of the 4-point grid; default: 4)")
    p.add_argument("--jobs", type=int, default=1, help="trials in flight, `sweep run --jobs` (default: 1)")
    p.add_argument("--epochs", type=int, default=2, help="train.epochs of every trial (default: 2)")
    p.add_argument("--poll", type=float, default=2.0, help="`sweep run --poll` seconds (default: 2)")
    p.add_argument("--tiny", action="store_true", help="small data and model in the copy's params.yaml, for a quick check")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = p.parse_args(argv)
    if not 1 <= args.trials <= 4 or args.jobs < 1 or args.epochs < 1:
        p.error("--trials must be 1..4, --jobs and --epochs >= 1")
    root = Path(tempfile.mkdtemp(prefix="inat_cnn_sweep_cost_"))
    copy, stage_log = root / "project", root / "stage_times.log"
    env = tool_env(copy / "src")
    print(machine_line(), flush=True)
    try:
        setup = prepare_copy(copy, args.tiny, stage_log, env)
        wall, cpu_s = sweep(copy, root, args, env)
        report(copy, stage_log, args, wall, cpu_s, setup)
    finally:
        if (copy / ".dvc").is_dir():
            stop_workers(copy, env)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
