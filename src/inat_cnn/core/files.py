"""Atomic file writes: nothing half-written is ever left looking complete.

A write goes to a temp beside its target, ``.<name>.<pid>.<random>.tmp``, renamed onto the target
when complete. A killed process (SIGKILL, a power cut) cannot remove its temp; the next write of the
same target does, once the process named in it is gone. The repository's .gitignore and .dvcignore
ignore the pattern ``.*.tmp``, so a leftover never shows in ``git status`` nor inside a DVC out.
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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one included: another thread may be writing)."""
    try:
        os.kill(pid, 0)  # signal 0: sends nothing, only checks
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Remove the temps of ``path`` that processes no longer running left beside it."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.\w{{8}}\.tmp")
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            _remove(entry)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, on error remove it.

    Works for files and directories (an existing directory at ``path`` is replaced). Temps of
    ``path`` left by killed processes are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    shutil.rmtree(tmp)  # only the unique name is wanted; the caller creates a file or a directory
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


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
