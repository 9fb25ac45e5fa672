"""Real dvc with the repository's cache link type (.dvc/config: hardlinks on ext4): data outs are
links to DVC's cache, not copies, and no stage edits an out in place (that would change the cache
object behind the link, and DVC would not notice: it trusts a read-only cache file without re-hashing).

Runs as root too, where the read-only mode of a linked file stops no write: the cache is checked by
hashing every object (a cache object's name is its content's md5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import run, set_params

pytestmark = pytest.mark.e2e

# download -> stratified_split -> prepare -> train_scratch -> evaluate_scratch: every kind of writer
# (the JPEG tree, the split CSVs, the memory-mapped cache, the checkpoint, dvclive, the figures)
STAGE_SCRIPTS = (["stages/download.py"], ["stages/stratified_split.py"], ["stages/prepare.py"],
                 ["stages/train_scratch.py"], ["stages/evaluate.py", "scratch"])
DATA_OUTS = ("data/raw", "data/split", "data/prepared", "models/scratch.pt", "dvclive/train_scratch",
             "dvclive/evaluate_scratch", "plots/scratch")


def cache_objects(repo: Path) -> dict[Path, str]:
    """{cache object: md5 of its content}; every object must hash to its own name (files/md5/ab/cdef...)."""
    objects = {}
    for path in sorted((repo / ".dvc/cache/files/md5").rglob("*")):
        if path.is_file():
            objects[path] = hashlib.md5(path.read_bytes()).hexdigest()
            name = path.parent.name + path.name.removesuffix(".dir")
            assert objects[path] == name, f"{path}: the cache object changed (its md5 is {objects[path]})"
    return objects


def files_of(repo: Path, outs: tuple[str, ...]) -> list[Path]:
    found = []
    for rel in outs:
        path = repo / rel
        found += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return found


def assert_linked(repo: Path, outs: tuple[str, ...]) -> None:
    """The files of ``outs`` are their cache objects (hard or symbolic links), not copies of them.

    DVC leaves a file of a directory out a copy when its content was in the cache already (here
    data/prepared/<split>/items.csv, the split CSV's rows again): a few KiB, allowed up to 1 % of the bytes."""
    files = files_of(repo, outs)
    assert len(files) > 50
    copies = [f for f in files if not f.is_symlink() and f.stat().st_nlink < 2]
    copied, total = sum(f.stat().st_size for f in copies), sum(f.stat().st_size for f in files)
    assert copied <= 0.01 * total, f"{len(copies)} of {len(files)} out files ({copied} of {total} bytes) are copies: {copies[:3]}"


def test_outs_are_links_to_the_cache_and_no_stage_edits_one_in_place(repo: Path):
    """``repo``: a `cp -a` copy of conftest's reproduced project, whose `dvc repro` linked every out."""
    assert_linked(repo, DATA_OUTS)
    before = cache_objects(repo)
    inodes = {f: f.stat().st_ino for f in files_of(repo, DATA_OUTS)}

    # Each stage run by hand, over its linked (read-only) outs: DVC does not delete them first here,
    # so an in-place write would reach the cache. Each writes new files in their place instead.
    for script in STAGE_SCRIPTS:
        run(["python", *script], repo)
    assert cache_objects(repo) == before
    rewritten = [f for f in files_of(repo, DATA_OUTS) if f.stat().st_ino != inodes.get(f)]
    assert len(rewritten) == len(inodes), "a stage run left an out file in place (not replaced by a new one)"

    # A file a stage wrote by hand stays a copy (DVC links on checkout and when a stage runs under it)
    run(["dvc", "checkout", "--relink", "--force", "--with-deps", "evaluate_scratch"], repo)
    assert_linked(repo, DATA_OUTS)

    # Through DVC (outs deleted before the stage runs): a changed param re-runs prepare, linked and clean.
    set_params(repo, {"prepare.side": 200})
    out = run(["dvc", "repro", "prepare"], repo).stdout
    assert "Running stage 'prepare'" in out and "Running stage 'download'" not in out, out
    assert_linked(repo, DATA_OUTS)
    assert "up to date" in run(["dvc", "status", "prepare"], repo).stdout
    after = cache_objects(repo)
    assert {p: after.get(p) for p in before} == before  # the first run's objects are all still there, unchanged
    assert len(after) > len(before)
