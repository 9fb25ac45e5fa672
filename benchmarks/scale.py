"""The data stages at iNaturalist-12K's size: time, memory and disk, DVC copying vs linking its cache.

For each variant, in a throwaway git repository made from the project's committed HEAD (git
archive: benchmarks/project_copy.py, as sweep_cost.py; the workspace is never touched):

  before   no cache link type (DVC's default, reflink,copy: ext4 copies every out into the cache)
  after    the project's .dvc/config as committed ([cache] type)

it generates the synthetic source at the given size (default 10 classes x 1,000 train + 200
test, 600-800 px photo-sized JPEGs, ~200 KiB each: the size of the real archive's images) and measures

  1. `dvc repro -s download`, `stratified_split`, `prepare` one at a time: wall time (the stage's
     command plus DVC hashing and caching its outs), the command's own time and peak RSS
     (/usr/bin/time), the peak RSS of the largest process (DVC or the stage: os.wait4 of dvc);
  2. disk (real blocks, `du`; a hardlinked file counts once): data/, .dvc/cache, both together,
     against the data's own size (`du -L data`: links followed);
  3. `dvc checkout` of data/ after deleting it;
  4. a queued experiment (`dvc exp run --queue -S train.lr=3e-4 train_scratch`, then
     `dvc queue start`, then inat_cnn.sweep.queue's QueueSnapshot until it has ended): the
     seconds from `dvc queue start` until its first stage starts, and whether its temp workspace
     (.dvc/tmp/exps/tmp*) got links or copies of data/. Nothing is trained: in the copy,
     train_scratch's command is replaced by a probe that records, from inside the temp workspace,
     how many of its data files are links, then fails the experiment on purpose (exit 3), so that
     no model is trained at this size and no worker needs killing.

Run:  python benchmarks/scale.py                  (full size: ~10 GB free disk, ~25 min on 2 shared cores)
      python benchmarks/scale.py --per-class 100  (a quick check)
Commit first: the copies are made from HEAD.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from project_copy import (commit, machine_line, make_copy, run, set_params, stage_events, stop_workers, timed, tool_env,
                          wrap_commands)

from inat_cnn.sweep.queue import QueueSnapshot, queue_command, start_workers

DATA_STAGES = ("download", "stratified_split", "prepare")
DATA_DIRS = ("data/raw", "data/split", "data/prepared")
PROBE_STAGE = "train_scratch"  # its upstream is every data stage: its temp workspace holds all of data/
PROBE_EXIT = 3
VARIANTS = ("before", "after")
GIB = 2**30
ENDED = ("finished", "success", "failed")  # QueueSnapshot.state_of of an experiment that has ended


def measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; return its wall seconds and the peak RSS (GiB) of the largest process in its tree
    (wait4's ru_maxrss covers the process and every descendant it waited for)."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    with tempfile.TemporaryFile("w+") as output:
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            output.seek(0)
            sys.exit(f"scale.py: `{shlex.join(cmd)}` failed ({proc.returncode}):\n{output.read()}")
    return wall, usage.ru_maxrss * 1024 / GIB


def du(cwd: Path, *paths: str, follow: bool = False) -> int:
    """Bytes of real blocks under ``paths`` together (``du -c``: a file hardlinked twice counts once);
    ``follow``: symbolic links followed (the data's own size whatever the link type)."""
    cmd = ["du", "-s", "-c", "-B1", *(["-L"] if follow else []), *paths]
    return int(subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout.splitlines()[-1].split()[0])


def link_counts(root: Path) -> tuple[int, int]:
    """(files, files that are links: a hardlink count over 1 or a symbolic link) under ``root``'s data dirs."""
    files = linked = 0
    for rel in DATA_DIRS:
        for path in (root / rel).rglob("*"):
            if path.is_symlink() or path.is_file():
                files += 1
                linked += path.is_symlink() or path.stat().st_nlink > 1
    return files, linked


def stage_times(log: Path) -> dict[str, list[tuple]]:
    """{stage: [(event, unix time, rc), ...]} from the wrapped commands' lines (project_copy's
    stage_events), and the probe's and /usr/bin/time's lines (their fields) under "probe" and "rss"."""
    events: dict[str, list] = {}
    for event in stage_events(log):
        events.setdefault(event.stage, []).append((event.event, event.time, event.rc))
    for fields in map(str.split, log.read_text().splitlines() if log.exists() else []):
        if fields and fields[0] in ("probe", "rss"):
            events.setdefault(fields[0], []).append(tuple(fields[1:]))
    return events


def make_project(copy: Path, variant: str, sizes: dict[str, int], log: Path, env: dict[str, str]) -> None:
    """HEAD's tree at ``sizes``, its data stages' commands timed, train_scratch a probe; committed."""
    make_copy(copy, env)
    set_params(copy, {f"data.synthetic.{key}": value for key, value in sizes.items()})
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    dirs, quoted = " ".join(DATA_DIRS), shlex.quote(str(log))
    probe = (f'echo "probe $(find {dirs} -type f | wc -l) $(find {dirs} -type f -links +1 | wc -l) '
             f'$(find {dirs} -type l | wc -l) $(du -s -c -B1 {dirs} | tail -1 | cut -f1) $PWD" >> {quoted}; exit {PROBE_EXIT}')
    stages[PROBE_STAGE]["cmd"] = probe
    for stage in DATA_STAGES:  # the command's own peak RSS (KiB), apart from DVC's
        stages[stage]["cmd"] = f'/usr/bin/time -a -o {quoted} -f "rss {stage} %M" {stages[stage]["cmd"]}'
    wrap_commands(copy, stages, [*DATA_STAGES, PROBE_STAGE], log)
    (copy / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], copy, env)
    if variant == "before":
        run(["dvc", "config", "--unset", "cache.type"], copy, env)
    print(f"{variant}: cache.type = {run(['dvc', 'config', 'cache.type'], copy, env, echo=False).stdout.strip() or 'unset'}", flush=True)
    commit(copy, f"HEAD copy ({variant})", env)


def measure_stages(copy: Path, log: Path, env: dict[str, str]) -> dict[str, dict[str, float]]:
    rows = {}
    for stage in DATA_STAGES:
        wall, rss = measured(["dvc", "repro", "-s", stage], copy, env)
        (start, t0, _), (end, t1, rc) = stage_times(log)[stage][-2:]
        assert (start, end, rc) == ("start", "end", "0"), (start, end, rc)
        cmd_rss = next(int(kib) for name, kib in reversed(stage_times(log)["rss"]) if name == stage) * 1024 / GIB
        rows[stage] = {"wall_s": wall, "cmd_s": t1 - t0, "rss_gib": rss, "cmd_rss_gib": cmd_rss}
    commit(copy, "dvc.lock of the data stages", env)
    return rows


def measure_disk(copy: Path) -> dict[str, float]:
    return {"data_own_gib": du(copy, "data", follow=True) / GIB, "data_gib": du(copy, "data") / GIB,
            "cache_gib": du(copy, ".dvc/cache") / GIB, "together_gib": du(copy, "data", ".dvc/cache") / GIB}


def measure_checkout(copy: Path, env: dict[str, str]) -> dict[str, float]:
    for rel in DATA_DIRS:
        shutil.rmtree(copy / rel)
    wall, rss = measured(["dvc", "checkout", "--with-deps", "prepare"], copy, env)
    files, linked = link_counts(copy)
    return {"wall_s": wall, "rss_gib": rss, "files": files, "linked": linked}


def wait_for_queue(copy: Path, names: list[str], poll: float = 5.0, timeout: float = 3600) -> QueueSnapshot:
    """Look (inat_cnn.sweep.queue's QueueSnapshot: git's refs/exps, then `dvc queue status`, as the
    sweep driver reads them) every ``poll`` seconds until every experiment of ``names`` has ended;
    the last look. Not more often: a status costs about a CPU-second, which the timings would feel."""
    deadline = time.time() + timeout
    while True:
        look = QueueSnapshot.take(copy, names)
        if all(look.state_of(name) in ENDED for name in names):
            return look
        if time.time() > deadline:
            sys.exit(f"scale.py: the queue has not ended {names} in {timeout:.0f} s: "
                     f"{ {name: look.state_of(name) for name in names} }")
        time.sleep(poll)


def measure_queue(copy: Path, variant: str, log: Path, env: dict[str, str]) -> dict[str, float]:
    """Queue one experiment, start the worker, wait until it has failed on the probe; stop the worker."""
    name = f"scale-{variant}"
    queued_s = timed(queue_command({"train.lr": 3e-4}, name, [PROBE_STAGE]), copy, env)
    print("$ dvc queue start -j 1   (then inat_cnn.sweep.queue's QueueSnapshot until the experiment has ended)", flush=True)
    started = time.time()
    start_workers(copy, 1, env, log.parent / f"queue_{variant}.log")  # the worker inherits env
    try:
        look = wait_for_queue(copy, [name])
    finally:
        stop_workers(copy, env)
    events = stage_times(log)
    if PROBE_STAGE not in events or "probe" not in events:
        sys.exit(f"scale.py: the queued experiment never reached {PROBE_STAGE} ({look.state_of(name)}); "
                 f"see `dvc queue logs {name}` in {copy}")
    files, linked, symlinks, data_bytes, workspace = events["probe"][-1]
    return {"queue_s": queued_s, "setup_s": events[PROBE_STAGE][0][1] - started, "files": int(files),
            "linked": int(linked) + int(symlinks), "data_gib": int(data_bytes) / GIB, "workspace": workspace}


def measure(variant: str, root: Path, sizes: dict[str, int]) -> dict:
    copy, log = root / variant, root / f"stage_times_{variant}.log"
    env = tool_env(copy / "src")
    make_project(copy, variant, sizes, log, env)
    result = {"stages": measure_stages(copy, log, env)}
    result["disk"] = measure_disk(copy)
    result["checkout"] = measure_checkout(copy, env)
    result["queue"] = measure_queue(copy, variant, log, env)
    print(f"{variant}: {result}", flush=True)
    return result


def ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}" if before else "n/a"


def table(results: dict[str, dict]) -> str:
    """The Markdown table of every figure, one column per variant (and after/before when both ran)."""
    both = set(VARIANTS) <= set(results)
    rows = []  # (label, format, value of one variant's results)
    for stage in DATA_STAGES:
        rows += [(f"`{stage}`: wall s (command + DVC hashing/caching)", "{:.1f}", lambda r, s=stage: r["stages"][s]["wall_s"]),
                 (f"`{stage}`: its command alone, s", "{:.1f}", lambda r, s=stage: r["stages"][s]["cmd_s"]),
                 (f"`{stage}`: its command's peak RSS, GiB", "{:.2f}", lambda r, s=stage: r["stages"][s]["cmd_rss_gib"]),
                 (f"`{stage}`: peak RSS of the largest process (dvc or the command), GiB", "{:.2f}",
                  lambda r, s=stage: r["stages"][s]["rss_gib"])]
    rows += [("data's own size (`du -L data`), GiB", "{:.2f}", lambda r: r["disk"]["data_own_gib"]),
             ("data/ on disk, GiB", "{:.2f}", lambda r: r["disk"]["data_gib"]),
             (".dvc/cache on disk, GiB", "{:.2f}", lambda r: r["disk"]["cache_gib"]),
             ("data/ + .dvc/cache on disk, GiB", "{:.2f}", lambda r: r["disk"]["together_gib"]),
             ("(data/ + cache) / data's own size", "{:.2f}", lambda r: r["disk"]["together_gib"] / r["disk"]["data_own_gib"]),
             ("`dvc checkout` of data/, s", "{:.1f}", lambda r: r["checkout"]["wall_s"]),
             ("`dvc checkout`: peak RSS, GiB", "{:.2f}", lambda r: r["checkout"]["rss_gib"]),
             ("after checkout: data files that are links", "{}", lambda r: f"{r['checkout']['linked']} of {r['checkout']['files']}"),
             ("`dvc exp run --queue`, s", "{:.1f}", lambda r: r["queue"]["queue_s"]),
             ("queued experiment: `dvc queue start` to its first stage, s", "{:.1f}", lambda r: r["queue"]["setup_s"]),
             ("its temp workspace: data files that are links", "{}", lambda r: f"{r['queue']['linked']} of {r['queue']['files']}")]
    head = ["figure", *results] + (["after / before"] if both else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, fmt, get in rows:
        cells = [fmt.format(get(results[v])) for v in results]
        if both:
            a, b = get(results["after"]), get(results["before"])
            cells.append(ratio(a, b) if isinstance(a, float) else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=1000, help="training images per class (iNaturalist-12K: ~1,000) (default: %(default)s)")
    p.add_argument("--test-per-class", type=int, help="test images per class (default: per-class / 5)")
    p.add_argument("--min-side", type=int, default=600, help="synthetic images' shortest allowed side, px (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=800, help="... and longest (600-800: ~200 KiB JPEGs, as the real photos) (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="before, after or both (comma-separated), in that order (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies (their path is printed)")
    args = p.parse_args(argv)
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    if not variants or args.per_class < 2:
        p.error("--variants: before and/or after; --per-class >= 2")
    sizes = {"train_per_class": args.per_class, "test_per_class": args.test_per_class or max(1, args.per_class // 5),
             "min_side": args.min_side, "max_side": args.max_side}
    t0 = time.time()
    print(machine_line(), flush=True)
    print(f"synthetic source: {', '.join(f'{k} {v}' for k, v in sizes.items())}", flush=True)
    results = {}
    for variant in variants:  # one after the other, each copy deleted before the next: half the peak disk
        root = Path(tempfile.mkdtemp(prefix=f"inat_cnn_scale_{variant}_"))
        try:
            results[variant] = measure(variant, root, sizes)
        finally:
            if args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    print("\n" + table(results))
    print(f"\ntotal runtime: {time.time() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
