"""Atomic file writes: nothing half-written is ever left looking complete.

A write goes to a temp beside its target, ``.<name>.<pid>.<random>.tmp``, renamed onto the target
when complete (a directory that is a DVC output: a temp inside it, :func:`atomic_dir`). A killed
process (SIGKILL, a power cut) cannot remove its temp; the next write of the same target does, and
so does the start of every stage (:func:`remove_stale_temps_under`, called by ``run_stage``), once
the process named in it is gone: not running, a zombie, or a later process that got its pid. The repository's .gitignore and .dvcignore ignore the pattern ``.*.tmp``, so a leftover
never shows in ``git status`` nor inside a DVC out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


# A temp's name: "." + the target's name + the writer's pid + mkdtemp's 8 random characters + ".tmp"
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.\w{8}\.tmp")
# Where stages write: the folders scanned for leftovers at the start of each stage
OUTPUT_ROOTS = ("data", "models", "metrics", "plots", "reports", "dvclive", ".resume")


def _linux_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None where /proc cannot say; -1.0 for a zombie."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    fields = stat_line[stat_line.rindex(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces
    if fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped by its parent) or dead: it writes nothing
        return -1.0
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _owner_alive(pid: int, temp: Path | None = None) -> bool:
    """Whether process ``pid`` may still be writing ``temp``: it runs, is no zombie, and (Linux) started
    before the temp was last changed (else the pid was reused by a later process). This process counts
    as alive: another thread may be writing."""
    try:
        os.kill(pid, 0)  # signal 0: sends nothing, only checks
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        pass
    started = _linux_start_time(pid)
    if started is None:
        return True
    if started < 0:
        return False
    try:
        # ctime, not mtime: a copy may set a file's mtime to the past, nothing sets a ctime back;
        # + 1 s: the boot time is in whole seconds
        return temp is None or started <= temp.lstat().st_ctime + 1.0
    except OSError:  # removed meanwhile
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Remove the temps of ``path`` that processes no longer running left beside it."""
    for entry in path.parent.iterdir():
        match = TEMP_NAME.fullmatch(entry.name)
        if match and match["target"] == path.name and not _owner_alive(int(match["pid"]), entry):
            _remove(entry)


def remove_stale_temps_under(roots: tuple[str | os.PathLike, ...] = OUTPUT_ROOTS) -> list[Path]:
    """Remove every temp under ``roots`` whose writer is gone; return them.

    Called at the start of every stage, so that a temp left by a killed stage goes even when that
    stage never runs again (``dvc repro`` finds it up to date). Cheap: one scandir per folder, links
    not followed, temps not entered.
    """
    removed: list[Path] = []
    folders = [Path(root) for root in roots]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # absent, or not a folder
            continue
        for entry in entries:
            match = TEMP_NAME.fullmatch(entry.name)
            if match and not _owner_alive(int(match["pid"]), Path(entry.path)):
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
            elif not match and entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, on error remove it.

    Works for files and directories (an existing directory at ``path`` is replaced). Temps of
    ``path`` left by killed processes are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _new_temp(path.parent, path.name)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def _new_temp(folder: Path, name: str) -> Path:
    """A free temp name for ``name`` in ``folder``: ``.<name>.<pid>.<random>.tmp`` (nothing is created)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder))
    shutil.rmtree(tmp)  # only the unique name is wanted; the caller creates a file or a directory
    return tmp


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_path` for a directory that is a DVC output: the temp is made INSIDE ``path``.

    DVC deletes a stage's outputs before it runs the stage or restores it from its run cache, and a
    restore runs no code of ours: a temp beside the output, left by a kill, would outlive it (the
    next ``dvc repro`` finds the stage cached and ``find -name '*.tmp'`` still finds the temp). Inside,
    DVC's delete takes it. On success the temp moves beside ``path`` and replaces it (renames only;
    under DVC ``path`` holds nothing else). ``path`` is created for the temp and removed again on failure.
    """
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path / path.name)  # earlier kills' temps inside it
    tmp, staged = _new_temp(path, path.name), None
    try:
        yield tmp
        staged = _new_temp(path.parent, path.name)
        os.replace(tmp, staged)
        shutil.rmtree(path)
        os.replace(staged, path)
    finally:
        for left in (tmp, staged):
            if left is not None and (left.exists() or left.is_symlink()):
                _remove(left)
        if created and staged is None and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # a failed first build leaves no empty output behind


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (serialise to memory first: ``torch.save`` to a file would record the
    temp file's random name inside the archive, and equal content would hash differently)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
