"""Wall time of a small hyper-parameter sweep through DVC experiments, and DVC's share of it.

The sweep runs in a throwaway git repository made from the project's committed HEAD (git
archive), so the workspace, its dvc.lock and its experiments are never touched. In that copy:

  1. set-up (timed, reported apart): the stages the sweep does not vary (the target's upstream
     stages that read none of the swept params, e.g. download and stratified_split) are
     reproduced with `dvc repro` and their dvc.lock committed, so that every experiment
     restores them and runs only the varied stages (train_scratch, as sweeps do: they rank by validation accuracy);
  2. the sweep (timed): a grid of train.lr x model.activation with -S train.epochs=E, either
     queued (`dvc exp run --queue` each, then `dvc queue start -j 1`) or run one after another
     in the workspace (`dvc exp run`).

Each varied stage's cmd is wrapped, in the copy's dvc.yaml, so that it appends its start and
end time and the experiment's name ($DVC_EXP_NAME) to a log outside the copy. That gives the
stage commands' own wall time (Python start, imports, training, evaluation: the project's work),
and

    DVC share = (sweep wall time - stage commands' wall time) / sweep wall time

where the sweep wall time counts queueing the experiments, starting the queue worker, each
experiment's temporary workspace, checkout of the set-up outputs, caching the new outputs and
committing the experiment. Run:  python benchmarks/sweep_cost.py   (--tiny for a quick check)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from inat_cnn.sweep.results import parse_exp_show

REPO = Path(__file__).resolve().parents[1]
GRID = {"train.lr": ["0.001", "0.0003"], "model.activation": ["relu", "gelu"]}
# --tiny: seconds per stage instead of tens of seconds (the copy's params.yaml, not swept)
TINY_PARAMS = {
    "data.synthetic.train_per_class": 8,
    "data.synthetic.test_per_class": 3,
    "data.synthetic.min_side": 64,
    "data.synthetic.max_side": 96,
    "model.input_size": 64,
    "model.filters": 8,
    "model.dense_units": 32,
    "train.batch_size": 16,
    "evaluate.guided_backprop_neurons": 3,
    "prepare.side": 72,  # the decode-once cache's squares; random 64 px crops are cut from them
}
NAME_PREFIX = "sweep"
REF_POLL_S = 0.25  # `git for-each-ref refs/exps`: notes when each experiment is committed (cheap)
STATUS_POLL_S = 10  # `dvc queue status`: ~1 CPU-second a call, so rarely while stages run


# ----------------------------------------------------------------------------- processes


def tool_env(src: Path) -> dict[str, str]:
    """This interpreter's bin first on PATH (dvc, and the `python` the stages call), the copy's
    src/ first on PYTHONPATH (the editable install would import the live workspace's inat_cnn)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(var, "inat-cnn benchmark")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(var, "benchmark@example.invalid")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], echo: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` (printed first when ``echo``); on failure exit with its output."""
    if echo:
        print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output="stdout" not in kwargs, check=False, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"sweep_cost.py: `{shlex.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout or ''}{proc.stderr or ''}")
    return proc


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.time()
    run(cmd, cwd, env)
    return time.time() - start


# -------------------------------------------------------------------------------- the copy


def make_copy(dest: Path, env: dict[str, str]) -> str:
    """Extract HEAD's tree into ``dest`` (a git repository of its own later); returns HEAD's sha."""
    dest.mkdir(parents=True)
    head = run(["git", "rev-parse", "HEAD"], REPO, env, echo=False).stdout.strip()
    print(f"$ git -C {REPO} archive HEAD | tar -x -C {dest}", flush=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", head], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return head


def set_params(copy: Path, updates: dict[str, object]) -> list[str]:
    """Set dotted keys (``model.filters``) in the copy's params.yaml. A key whose top section
    HEAD's params.yaml lacks (``prepare`` before that stage existed) is skipped and returned."""
    path = copy / "params.yaml"
    params = yaml.safe_load(path.read_text())
    skipped = []
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        if parents[0] not in params:
            skipped.append(dotted)
            continue
        node = params
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            sys.exit(f"sweep_cost.py: params.yaml at HEAD has no {dotted}; update TINY_PARAMS")
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return skipped


def commit(copy: Path, message: str, env: dict[str, str]) -> None:
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", message], copy, env)


# --------------------------------------------------------------------------- the pipeline


def _paths(entries: list) -> list[str]:
    """Paths of a stage's deps / outs / metrics / plots (plain strings or ``{path: options}``)."""
    return [(e if isinstance(e, str) else next(iter(e))).rstrip("/") for e in entries or []]


def _params(stage: dict) -> list[str] | None:
    """The params.yaml keys a stage reads; None for the whole file."""
    keys = []
    for entry in stage.get("params") or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif "params.yaml" in entry:
            if entry["params.yaml"] is None:
                return None
            keys.extend(entry["params.yaml"])
    return keys


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _with_upstream(name: str, parents: dict[str, set[str]]) -> set[str]:
    found, todo = set(), [name]
    while todo:
        stage = todo.pop()
        if stage not in found:
            found.add(stage)
            todo.extend(parents[stage])
    return found


def plan_stages(stages: dict, target: str, swept: list[str]) -> tuple[list[str], list[str]]:
    """Split the target and its upstream stages (in dvc.yaml order) into those the sweep leaves
    alone (set-up: reproduced once) and those it varies (they or a stage upstream of them read a
    swept param: DVC re-runs them in every experiment)."""
    outs = {name: _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots")) for name, s in stages.items()}
    parents = {
        name: {up for up in stages if up != name and any(_overlaps(d, o) for d in _paths(s.get("deps")) for o in outs[up])}
        for name, s in stages.items()
    }

    def reads_swept(name: str) -> bool:
        keys = _params(stages[name])
        return keys is None or any(k == p or k.startswith(p + ".") for k in swept for p in keys)

    upstream = _with_upstream(target, parents)
    varied = {n for n in upstream if any(reads_swept(m) for m in _with_upstream(n, parents))}
    return [n for n in stages if n in upstream - varied], [n for n in stages if n in varied]


def wrap_commands(copy: Path, stages: dict, varied: list[str], log: Path) -> None:
    """Make each varied stage append `NAME STAGE start|end UNIX_TIME [rc]` lines to ``log``."""
    for name in varied:
        cmd = stages[name]["cmd"]
        cmd = " && ".join(cmd) if isinstance(cmd, list) else cmd
        line = f'"$DVC_EXP_NAME {name} %s $(date +%%s.%%N)%s" >> {shlex.quote(str(log))}'
        stages[name]["cmd"] = f"echo {line % ('start', '')}; ({cmd}); rc=$?; echo {line % ('end', ' $rc')}; exit $rc"
    path = copy / "dvc.yaml"
    dvc_yaml = yaml.safe_load(path.read_text())
    dvc_yaml["stages"] = stages
    path.write_text(yaml.safe_dump(dvc_yaml, sort_keys=False, width=1000))


def read_stage_log(log: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """{experiment: {stage: (start, end)}} of the stage commands that finished with exit code 0."""
    starts, spans = {}, {}
    for line in log.read_text().splitlines() if log.exists() else []:
        exp, stage, event, stamp, *rc = line.split()
        if event == "start":
            starts[exp, stage] = float(stamp)
        elif rc == ["0"]:
            spans.setdefault(exp, {})[stage] = (starts[exp, stage], float(stamp))
    return spans


# ------------------------------------------------------------------------------- the sweep


def sweep_configs(n: int, epochs: int) -> list[list[str]]:
    """The -S arguments of the first ``n`` grid points."""
    points = itertools.product(*([f"{k}={v}" for v in values] for k, values in GRID.items()))
    return [[a for s in (*point, f"train.epochs={epochs}") for a in ("-S", s)] for point in itertools.islice(points, n)]


def exp_refs(copy: Path) -> set[str]:
    """Names of the committed experiments (refs/exps/<xx>/<baseline>/<name>)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=copy,
                          capture_output=True, text=True, check=True).stdout.split()
    return {ref.rsplit("/", 1)[-1] for ref in refs}


def queue_status(text: str) -> dict[str, str]:
    """{name: Queued | Running | Success | Failed} from `dvc queue status` (task, name, created, status)."""
    rows = [line.split() for line in text.splitlines()]
    return {r[1]: r[-1] for r in rows if len(r) >= 5 and r[-1] in ("Queued", "Running", "Success", "Failed")}


def wait_for_queue(copy: Path, names: list[str], env: dict[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """Poll until `dvc queue status` shows nothing queued or running. Returns when each
    experiment's result ref appeared (checked every REF_POLL_S, also while `dvc queue status`
    runs in the background) and the last status."""
    committed: dict[str, float] = {}
    status: dict[str, str] = {}
    poll, last_poll = None, 0.0
    while True:
        now = time.time()
        for name in exp_refs(copy) & set(names) - set(committed):
            committed[name] = now
        if poll is None and (len(committed) == len(names) or now - last_poll > STATUS_POLL_S):
            poll = subprocess.Popen(["dvc", "queue", "status"], cwd=copy, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            last_poll = now
        elif poll is not None and poll.poll() is not None:
            if poll.returncode != 0:
                sys.exit(f"sweep_cost.py: `dvc queue status` failed ({poll.returncode}):\n{poll.stdout.read()}")
            status, poll = queue_status(poll.stdout.read()), None
            if status and not {"Queued", "Running"} & set(status.values()):
                return committed, status
        time.sleep(REF_POLL_S)


def run_queue(copy: Path, names: list[str], configs: list[list[str]], target: str, env: dict[str, str],
              queue_log: Path) -> tuple[dict[str, float], dict[str, float], float]:
    """Queue every experiment (timing each call), start one worker, wait until the queue is idle.
    Returns each experiment's queueing seconds, the time its result was committed, and the
    time `dvc queue start` was called."""
    queued = {}
    for name, sets in zip(names, configs):
        queued[name] = timed(["dvc", "exp", "run", "--queue", "-n", name, *sets, target], copy, env)
    cmd = ["dvc", "queue", "start", "-j", "1"]
    print(f"$ {shlex.join(cmd)} >{queue_log} 2>&1   (then `dvc queue status` until nothing is queued or running)", flush=True)
    started = time.time()
    with queue_log.open("w") as out:  # a pipe here would block: the detached worker inherits it
        run(cmd, copy, env, echo=False, stdout=out, stderr=out)
    committed, status = wait_for_queue(copy, names, env)
    failed = [n for n in names if status.get(n) != "Success"]
    for name in failed:
        print(f"\n--- dvc queue logs {name} ---\n{run(['dvc', 'queue', 'logs', name], copy, env, echo=False).stdout}")
    if failed:
        sys.exit(f"sweep_cost.py: experiment(s) {', '.join(failed)} did not succeed: {status}")
    return queued, committed, started


def run_sequential(copy: Path, names: list[str], configs: list[list[str]], target: str,
                   env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """`dvc exp run` each experiment in the copy's workspace; returns each one's (start, end)."""
    runs = {}
    for name, sets in zip(names, configs):
        start = time.time()
        run(["dvc", "exp", "run", "-n", name, *sets, target], copy, env)
        runs[name] = (start, time.time())
    return runs


def stop_worker(copy: Path, env: dict[str, str], timeout: float = 60) -> None:
    """`dvc queue stop`, then wait until dvc-task has recorded the worker's exit code in
    .dvc/tmp/exps/celery/<worker>.json, its last write: a worker still shutting down would
    re-create files in the copy after it is deleted."""
    subprocess.run(["dvc", "queue", "stop"], cwd=copy, env=env, capture_output=True, check=False)
    deadline = time.time() + timeout
    infos = list((copy / ".dvc/tmp/exps/celery").glob("*.json"))
    while any(json.loads(f.read_text()).get("returncode") is None for f in infos) and time.time() < deadline:
        time.sleep(0.5)


def check_experiments(copy: Path, names: list[str], env: dict[str, str]) -> None:
    """Every experiment is in `dvc exp show --json`, finished with success."""
    shown = {e.name: e.status for e in parse_exp_show(json.loads(run(["dvc", "exp", "show", "--json"], copy, env).stdout))}
    bad = {n: shown.get(n, "missing") for n in names if shown.get(n) != "success"}
    if bad:
        sys.exit(f"sweep_cost.py: `dvc exp show --json` does not show every experiment as a success: {bad}")


# -------------------------------------------------------------------------------- report


def report(rows: list[dict], varied: list[str], fixed: str) -> None:
    """One line per experiment, then the totals."""
    stage_cols = "".join(f"{s[:16]:>17}" for s in varied)
    print(f"\n{'experiment':<10} {'config':<38}{'queueing':>9}{'run':>8}{'wall':>8}{stage_cols}"
          f"{'stages':>8}{'DVC':>7}{'DVC %':>7}{'before':>8}{'after':>7}")
    for r in rows:
        cells = "".join(f"{r['stages'][s]:>17.1f}" for s in varied)
        print(f"{r['name']:<10} {r['config']:<38}{r['queueing']:>9.1f}{r['run']:>8.1f}{r['wall']:>8.1f}{cells}"
              f"{r['stage_s']:>8.1f}{r['dvc']:>7.1f}{r['dvc'] / r['wall']:>7.0%}{r['before']:>8.1f}{r['after']:>7.1f}")
    wall, stages = sum(r["wall"] for r in rows), sum(r["stage_s"] for r in rows)
    print("(seconds; wall = queueing + run; DVC = wall - stages; before / after = from the start of the run to "
          "the first stage command, from the last one to the end of the run)")
    print(f"\nsweep wall: {wall:.1f} s for {len(rows)} experiment(s), stage commands {stages:.1f} s, DVC {wall - stages:.1f} s")
    print(f"queue fixed cost (worker start): {fixed}")
    print(f"seconds per experiment: {wall / len(rows):.1f}")
    print(f"DVC share: {(wall - stages) / wall:.1%}")


def experiment_rows(names: list[str], configs: list[list[str]], spans: dict, queueing: dict[str, float],
                    runs: dict[str, tuple[float, float]]) -> list[dict]:
    """Per experiment, in the order they ran: queueing, run (start, end), the stage commands'
    seconds, DVC's seconds."""
    rows = []
    for name, sets in sorted(zip(names, configs), key=lambda pair: runs[pair[0]][0]):
        stages = {s: end - start for s, (start, end) in spans[name].items()}
        start, end = runs[name]
        wall = queueing.get(name, 0.0) + end - start
        rows.append({
            "name": name, "config": " ".join(sets[1::2][:-1]), "queueing": queueing.get(name, 0.0),
            "run": end - start, "wall": wall, "stages": stages, "stage_s": sum(stages.values()),
            "dvc": wall - sum(stages.values()),
            "before": min(s for s, _ in spans[name].values()) - start,
            "after": end - max(e for _, e in spans[name].values()),
        })
    return rows


def machine_line() -> str:
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs | torch {torch.__version__}, {torch.get_num_threads()} intra-op threads | "
            f"device {device} (train.device auto) | dvc {dvc} | python {sys.version.split()[0]}")


def prepare_copy(copy: Path, target: str, tiny: bool, stage_log: Path, env: dict[str, str]) -> list[str]:
    """HEAD's tree as a git repository whose varied stages log their times, set-up stages
    reproduced and committed (timed). Returns the varied stages."""
    head = make_copy(copy, env)
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    if target not in stages:
        sys.exit(f"sweep_cost.py: --target {target!r} is not a stage of dvc.yaml at HEAD: {', '.join(stages)}")
    setup, varied = plan_stages(stages, target, [*GRID, "train.epochs"])
    if not varied:
        sys.exit(f"sweep_cost.py: --target {target} reads none of the swept params {[*GRID, 'train.epochs']}")
    print(f"HEAD {head[:12]} copied to {copy}; set-up stages: {', '.join(setup) or 'none'}; "
          f"varied (timed) stages: {', '.join(varied)}", flush=True)
    if tiny:
        skipped = set_params(copy, TINY_PARAMS)
        print(f"--tiny params: {', '.join(f'{k}={v}' for k, v in TINY_PARAMS.items() if k not in skipped)}"
              + (f" (not in HEAD's params.yaml, skipped: {', '.join(skipped)})" if skipped else ""), flush=True)
    wrap_commands(copy, stages, varied, stage_log)
    (copy / "dvc.lock").unlink(missing_ok=True)  # no stale entries: every varied stage runs in every experiment
    run(["git", "init", "-q"], copy, env)
    commit(copy, "HEAD copy, stage commands timed", env)
    setup_s = timed(["dvc", "repro", *setup], copy, env) if setup else 0.0
    commit(copy, "dvc.lock of the set-up stages", env)
    print(f"set-up (dvc repro {' '.join(setup)}, not counted below): {setup_s:.1f} s", flush=True)
    return varied


def queue_fixed_cost(rows: list[dict], mode: str) -> str:
    """Worker start etc.: how much longer the first queued experiment waited for its first stage."""
    if mode == "sequential":
        return "n/a in sequential mode (every dvc exp run pays its own start)"
    if len(rows) < 2:
        return "n/a with one experiment (needs --configs >= 2)"
    later = statistics.median(r["before"] for r in rows[1:])
    return (f"{rows[0]['before'] - later:.1f} s (the first experiment's 'before' {rows[0]['before']:.1f} s "
            f"minus the later ones' median {later:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_size = len(list(itertools.product(*GRID.values())))
    p.add_argument("--configs", type=int, default=grid_size, help=f"the first N of the {grid_size}-point grid "
                   + " x ".join(f"{k} {{{', '.join(v)}}}" for k, v in GRID.items()))
    p.add_argument("--epochs", type=int, default=2, help="-S train.epochs=E for every experiment")
    p.add_argument("--target", default="train_scratch", help="the stage each experiment reproduces")
    p.add_argument("--mode", choices=("queue", "sequential"), default="queue",
                   help="queue: dvc exp run --queue + dvc queue start -j 1; sequential: dvc exp run one after another")
    p.add_argument("--tiny", action="store_true", help="small data and model in the copy's params.yaml, for a quick check")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = p.parse_args(argv)
    if not 1 <= args.configs <= grid_size or args.epochs < 1:
        p.error(f"--configs must be 1..{grid_size}, --epochs >= 1")

    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="inat_cnn_sweep_cost_"))
    copy, stage_log, queue_log = root / "project", root / "stage_times.log", root / "queue.log"
    env = tool_env(copy / "src")
    print(machine_line(), flush=True)
    try:
        varied = prepare_copy(copy, args.target, args.tiny, stage_log, env)
        names = [f"{NAME_PREFIX}-{i}" for i in range(1, args.configs + 1)]
        configs = sweep_configs(args.configs, args.epochs)
        if args.mode == "queue":
            queueing, committed, started = run_queue(copy, names, configs, args.target, env, queue_log)
            order = sorted(names, key=committed.get)  # -j 1: one after another, each from the previous commit
            runs = {n: (committed[order[i - 1]] if i else started, committed[n]) for i, n in enumerate(order)}
        else:
            queueing, runs = {}, run_sequential(copy, names, configs, args.target, env)
        check_experiments(copy, names, env)
        spans = read_stage_log(stage_log)
        missing = {n: sorted(set(varied) - set(spans.get(n, {}))) for n in names if set(spans.get(n, {})) != set(varied)}
        if missing:
            sys.exit(f"sweep_cost.py: varied stages that did not run (or log their times) in these experiments: {missing}")
        rows = experiment_rows(names, configs, spans, queueing, runs)
        report(rows, varied, queue_fixed_cost(rows, args.mode))
    finally:
        if args.mode == "queue" and (copy / ".dvc").is_dir():
            stop_worker(copy, env)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total runtime: {time.time() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
