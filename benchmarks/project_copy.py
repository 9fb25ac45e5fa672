"""A throwaway copy of the project for the benchmarks that run DVC (sweep_cost.py, scale.py).

They measure the committed pipeline without touching the workspace, its dvc.lock, study or
experiments: HEAD's tree is extracted (``git archive``) into a temporary git repository of its
own, its params.yaml and dvc.yaml edited there (:func:`set_params`, :func:`wrap_commands`: each
stage logs its start and end), and every command runs with :func:`tool_env`, so that the copy's
src/ is the inat_cnn imported. Not a benchmark.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import yaml

from inat_cnn.sweep.queue import workers_alive

REPO = Path(__file__).resolve().parents[1]


def _script() -> str:
    """The running benchmark's file name, which its error messages start with."""
    return Path(sys.argv[0]).name


def tool_env(src: Path) -> dict[str, str]:
    """This interpreter's bin first on PATH (dvc, inat-cnn, the stages' `python`), the copy's src/
    first on PYTHONPATH (the editable install would import the live workspace's inat_cnn), and a
    git identity: the copy is committed to, and the machine may have none."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    for var in ("GIT_AUTHOR", "GIT_COMMITTER"):
        env.setdefault(f"{var}_NAME", "inat-cnn benchmark")
        env.setdefault(f"{var}_EMAIL", "benchmark@example.invalid")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], echo: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` (printed first when ``echo``; output captured unless ``stdout`` is given); on
    failure exit with its output: a benchmark whose set-up failed has nothing to measure."""
    if echo:
        print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output="stdout" not in kwargs, check=False, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"{_script()}: `{shlex.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout or ''}{proc.stderr or ''}")
    return proc


def timed(cmd: list[str], cwd: Path, env: dict[str, str], **kwargs) -> float:
    """:func:`run`'s wall seconds: the figure most benchmarks report."""
    start = time.time()
    run(cmd, cwd, env, **kwargs)
    return time.time() - start


def make_copy(dest: Path, env: dict[str, str]) -> str:
    """Extract HEAD's tree into ``dest`` (made a git repository of its own later); returns HEAD's
    sha. Committed files only: what is measured is what a clone would run."""
    dest.mkdir(parents=True)
    head = run(["git", "rev-parse", "HEAD"], REPO, env, echo=False).stdout.strip()
    print(f"$ git -C {REPO} archive {head[:12]} | tar -x -C {dest}", flush=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", head], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return head


def set_params(copy: Path, updates: dict[str, object]) -> list[str]:
    """Set dotted keys (``model.filters``) in the copy's params.yaml. A key whose top section
    HEAD's params.yaml lacks (``prepare`` before that stage existed) is skipped and returned; a
    missing key below an existing section is an error: the benchmark's settings are stale."""
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
            sys.exit(f"{_script()}: params.yaml at HEAD has no {dotted}; update the benchmark's settings")
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return skipped


def commit(copy: Path, message: str, env: dict[str, str]) -> None:
    """Commit everything in the copy: queued experiments start from the last commit."""
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", message], copy, env)


def wrap_commands(copy: Path, stages: dict, names: list[str], log: Path) -> None:
    """Write ``stages`` (dvc.yaml's, edited) into the copy's dvc.yaml, each of ``names`` wrapped
    to append ``[EXP_NAME] STAGE start TIME`` and ``[EXP_NAME] STAGE end TIME RC`` lines to
    ``log`` (outside the copy; EXP_NAME is empty outside experiments): the stage commands' own
    seconds, apart from DVC's. :func:`stage_events` reads them back."""
    for name in names:
        cmd = stages[name]["cmd"]
        cmd = " && ".join(cmd) if isinstance(cmd, list) else cmd
        line = f'"$DVC_EXP_NAME {name} %s $(date +%%s.%%N)%s" >> {shlex.quote(str(log))}'
        stages[name]["cmd"] = f"echo {line % ('start', '')}; ({cmd}); rc=$?; echo {line % ('end', ' $rc')}; exit $rc"
    path = copy / "dvc.yaml"
    dvc_yaml = yaml.safe_load(path.read_text())
    dvc_yaml["stages"] = stages
    path.write_text(yaml.safe_dump(dvc_yaml, sort_keys=False, width=1000))


class StageEvent(NamedTuple):
    """One line of :func:`wrap_commands`' log."""

    exp: str  # the experiment's name; "" outside experiments
    stage: str
    event: str  # start | end
    time: float
    rc: str  # the command's exit code at its end; "" at its start


def stage_events(log: Path) -> list[StageEvent]:
    """The start and end lines of :func:`wrap_commands`' log, in order; other lines (a benchmark's
    own, appended to the same log) are left out."""
    events = []
    for fields in map(str.split, log.read_text().splitlines() if log.exists() else []):
        if len(fields) in (3, 4) and fields[-2] == "start":
            head, event, stamp, rc = fields[:-2], "start", fields[-1], ""
        elif len(fields) in (4, 5) and fields[-3] == "end":
            head, event, stamp, rc = fields[:-3], "end", fields[-2], fields[-1]
        else:
            continue
        exp, stage = ["", *head][-2:]
        events.append(StageEvent(exp, stage, event, float(stamp), rc))
    return events


def machine_line() -> str:
    """CPU model and count, torch and its threads, the device training would pick, dvc and
    python: what every figure depends on, printed first."""
    import torch  # here: a second or two to import, paid only by the benchmarks that print this line

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "--version"], capture_output=True, text=True,
                         check=False).stdout.strip() or "?"
    return (f"{model}, {os.cpu_count()} CPUs | torch {torch.__version__}, {torch.get_num_threads()} intra-op threads | "
            f"device {device} (train.device auto) | dvc {dvc} | python {sys.version.split()[0]}")


def stop_workers(copy: Path, env: dict[str, str], timeout: float = 60) -> None:
    """`dvc queue stop`, then wait until no queue worker runs (inat_cnn.sweep.queue reads their
    process files): one still shutting down would write into the copy after it is deleted."""
    subprocess.run(["dvc", "queue", "stop"], cwd=copy, env=env, capture_output=True, check=False)
    deadline = time.time() + timeout
    while workers_alive(copy) and time.time() < deadline:
        time.sleep(0.5)
