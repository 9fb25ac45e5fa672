"""Kill `dvc repro` at random points on a zip source; after each kill, a plain `dvc repro` must end
with the uninterrupted run's results and leave no ``*.tmp`` anywhere in the project.

    python benchmarks/kill_loop.py [--kills 10] [--seed 0] [--within S] [--work DIR | --keep]

A throw-away copy of the project (tests/conftest.py's ``copy_project``, the tests' tiny params) reads
a small iNaturalist-layout zip. One uninterrupted ``dvc repro`` is the reference. Then, ``--kills``
times: ``dvc repro --force`` (every stage runs again, the zip extraction included) is SIGKILLed,
with its stage process (the whole process group, as a power cut would), at a random moment of its
run (or of its first ``--within`` seconds: download, split and prepare come first); ``dvc repro``
follows at once, its outputs' hashes (dvc.lock) are compared with the reference's (wall-clock
outputs excepted; metrics/train_*.json without its training seconds), and
``find . -name '*.tmp'`` is run. One line per kill and a verdict; exit 1 if any recovery failed,
differed or left a temp.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' project copy and tiny params, not a second variant
from conftest import TINY_PARAMS, copy_project, run, set_params, tool_env  # noqa: E402
from test_data_sources import inat_files  # noqa: E402

from inat_cnn.report.sources import lock_outputs  # noqa: E402

# Outputs whose bytes hold wall-clock times (training seconds, images/s): they differ between any two
# runs, killed or not. The accuracies they also show are compared in evaluate_*.json and train_*.json.
TIMED = re.compile(r"metrics/(details/)?(timing_\w+|prepare|compare)\.json|reports/(index\.html|compare\.md)")
# The leaderboard's metrics/train_<model>.json holds the training seconds (<model>_secs) beside the accuracy,
# epochs and size: compared with that key left out.
SECONDS_KEY = re.compile(r"\w+_secs")


def same_but_seconds(reference: Path, repo: Path, path: str) -> bool:
    """Whether the JSON object ``path`` is the same in both projects once its ``*_secs`` keys are left out."""
    a, b = reference / path, repo / path
    if a.suffix != ".json" or not (a.is_file() and b.is_file()):
        return False
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return False
    return {k: v for k, v in first.items() if not SECONDS_KEY.fullmatch(k)} == {k: v for k, v in second.items() if not SECONDS_KEY.fullmatch(k)}


def make_project(root: Path, source: Path) -> Path:
    repo = copy_project(root)
    set_params(repo, {**TINY_PARAMS, "data.source": str(source)})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "kill loop"], repo)
    return repo


def out_hashes(repo: Path) -> dict[str, str]:
    """Every stage output's hash as dvc.lock records it (read as the report page reads it)."""
    return {row["path"]: row["md5"] for row in lock_outputs(repo / "dvc.lock")}


def temps(repo: Path) -> list[str]:
    found = subprocess.run(["find", ".", "-name", "*.tmp"], cwd=repo, capture_output=True, text=True, check=True)
    return found.stdout.split()


def killed_repro(repo: Path, after_s: float, log: Path) -> str:
    """Start `dvc repro --force`, SIGKILL its process group after ``after_s``; the stage it was in."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["dvc", "repro", "--force"], cwd=repo, env=tool_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            proc.wait(timeout=after_s)
            return "(finished first)"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except BaseException:  # this script interrupted: no dvc left running on its own
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    stages = re.findall(r"Running stage '([^']+)'", log.read_text())
    return stages[-1] if stages else "(before the first stage)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="killed runs, each followed by a recovery (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default: %(default)s)")
    parser.add_argument("--within", type=float, help="kill within this many seconds of the start (default: the whole run)")
    parser.add_argument("--work", type=Path, help="a folder for the copies, kept (default: a temp folder, deleted unless a kill failed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="inat_cnn_kill_loop."))
    work.mkdir(parents=True, exist_ok=True)
    failures = None
    try:
        failures = kill_loop(work, args.kills, args.seed, args.within)
    finally:
        if args.work or args.keep or failures != 0:  # a failed (or interrupted) loop's copies are kept to look at
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


def kill_loop(work: Path, kills: int, seed: int, within: float | None) -> int:
    """The reference run, then ``kills`` killed runs each followed by a recovery, in ``work``; the failed recoveries."""
    source = work / "photos.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for rel, data in inat_files(("Aves", "Fungi", "Insecta"), n_train=10, n_val=3, prefix="nature/").items():
            archive.writestr(rel, data)

    reference = make_project(work / "reference", source)
    start = time.monotonic()
    run(["dvc", "repro"], reference)
    full_s = time.monotonic() - start
    expected = out_hashes(reference)
    print(f"uninterrupted dvc repro: {full_s:.0f} s, {len(expected)} outputs; temps left: {temps(reference)}", flush=True)

    repo = make_project(work / "killed", source)
    run(["dvc", "repro"], repo)
    rng = random.Random(seed)
    failures = 0
    for i in range(1, kills + 1):
        after_s = rng.uniform(0.5, within or full_s)
        stage = killed_repro(repo, after_s, work / f"kill_{i}.log")
        left_by_kill = temps(repo)
        recovery = run(["dvc", "repro"], repo, check=False)
        differ = sorted(p for p, h in out_hashes(repo).items()
                        if expected.get(p) != h and not TIMED.fullmatch(p) and not same_but_seconds(reference, repo, p))
        left = temps(repo)
        ok = recovery.returncode == 0 and not differ and not left
        failures += not ok
        print(f"kill {i:2}: at {after_s:5.1f} s in {stage}; temps after the kill: {len(left_by_kill)}; "
              f"dvc repro exit {recovery.returncode}; outputs differing: {differ or 'none'}; "
              f"*.tmp after: {left or 'none'} -> {'ok' if ok else 'FAILED'}", flush=True)
        if recovery.returncode:
            print(recovery.stdout[-2000:], recovery.stderr[-2000:])
    print(f"{kills - failures} of {kills} kills recovered to the uninterrupted results with no temp left "
          f"(wall-clock outputs not compared: {TIMED.pattern}; {SECONDS_KEY.pattern} keys left out of JSON metrics)")
    return failures


if __name__ == "__main__":
    main()
