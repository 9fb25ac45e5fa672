"""The ``download`` stage's library: any data source -> ``out_dir/{train,test}/<class>/*`` + a report.

Sources: ``synthetic`` (generated), ``nature_12k`` (downloaded from ``data.url`` and unzipped), or
a local directory or ``.zip`` in the iNaturalist layout: somewhere inside, a folder holding
``train/`` and ``val/`` (or ``test/``), one subfolder per class. The archive's ``val/`` is the
TEST set (``test/`` wins when both exist; the report says which one it was). Every entry of a class
folder is checked with :func:`check_image`; bad ones (broken links, FIFOs, names that are not
UTF-8, images beyond the size limits ...) are reported, never copied; of a good one, only the image is
(the bytes up to its end marker: :func:`~.images.image_length`). The dataset is built in a
temp folder (a zip is extracted inside it) and renamed onto ``out_dir``, so an interrupted run never
leaves a half dataset behind.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.config import DataConfig
from ..core.errors import UserError
from ..core.files import atomic_dir
from .download import fetch, safe_extract_zip, sha256_file
from .images import ImageLimits, inspect_image, is_utf8, list_class_dirs, list_entries, list_images
from .synthetic import generate_synthetic

SOURCES = ("synthetic", "nature_12k")
SPLITS = ("train", "test")
MAX_ROOT_DEPTH = 4
CHECK_THREADS = 4
NESTED_FOLDER = "a folder inside a class folder (classes are one level deep: its files are not used)"


def find_dataset_root(base: Path) -> tuple[Path, Path, Path]:
    """(root, train folder, test folder): the shallowest folder under ``base`` holding ``train/`` and
    ``val/`` or ``test/`` (``test/`` wins when both exist)."""
    queue: deque[tuple[Path, int]] = deque([(base, 0)])
    found: list[Path] = []
    found_depth = None
    while queue:
        folder, depth = queue.popleft()
        if found_depth is not None and depth > found_depth:
            break
        names = set(list_class_dirs(folder))
        if "train" in names and names & {"val", "test"}:
            found.append(folder)
            found_depth = depth
        elif depth < MAX_ROOT_DEPTH:
            queue.extend((folder / name, depth + 1) for name in sorted(names))
    if not found:
        top = ", ".join(list_class_dirs(base)[:10]) or "no folders"
        raise UserError(
            f"{base}: no dataset found: expected a folder holding train/ and val/ (or test/), each with one "
            f"subfolder per class (as in the iNaturalist-12K archive); found: {top}"
        )
    if len(found) > 1:
        raise UserError(f"{base}: several dataset folders found ({', '.join(map(str, found))}); point data.source at one of them")
    root = found[0]
    return root, root / "train", root / ("test" if (root / "test").is_dir() else "val")


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, printable: bytes that are not UTF-8 shown as ``\\xff``."""
    return path.relative_to(base).as_posix().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _transfer(src: Path, dst: Path, length: int, move: bool) -> None:
    """Copy (or move) ``src`` to ``dst``, keeping its first ``length`` bytes: the image without what
    follows its end marker (a motion photo's video, junk), which would cost its size in data/raw and
    again in DVC's cache."""
    if src.stat().st_size <= length:
        (os.replace if move else shutil.copyfile)(src, dst)
    elif move:  # our own extracted copy: cut it short in place
        os.truncate(src, length)
        os.replace(src, dst)
    else:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            fout.write(fin.read(length))


def _import_split(
    src: Path, dst: Path, base: Path, shown_as: str, policy: str, move: bool, limits: ImageLimits, pool: ThreadPoolExecutor
) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Check every entry of ``src/<class>/`` and copy (or move) the good files to ``dst/<class>/``.

    Whatever else is in ``src`` is reported like a bad file, never silently dropped: an entry beside
    the class folders, a folder inside a class folder (classes are one level deep, so its files
    would not be used), and anything that is not a regular file (a broken link, a link loop, a FIFO:
    :func:`check_image` says which, without opening it). Paths are reported relative to ``base``,
    which messages call ``shown_as``.
    """
    counts: dict[str, int] = {}
    bad: list[dict[str, str]] = []

    def reject(path: Path, reason: str) -> None:
        rel = _shown(path, base)
        if policy == "fail":
            raise UserError(f"{rel} (in {shown_as}): {reason}; remove it, or set data.bad_images: skip to leave it out")
        bad.append({"path": rel, "reason": reason})

    for path in list_entries(src):
        if not path.is_dir():
            reject(path, "a file outside the class folders (not used)")
    for name in list_class_dirs(src):
        if not is_utf8(name):
            raise UserError(f"{_shown(src / name, base)} (in {shown_as}): the class folder's name is not valid UTF-8; rename it")
        entries = list_entries(src / name)
        files = [path for path in entries if not path.is_dir()]
        (dst / name).mkdir(parents=True)
        counts[name] = 0
        for folder in (path for path in entries if path.is_dir()):
            reject(folder, NESTED_FOLDER)
        for path, (reason, length) in zip(files, pool.map(functools.partial(inspect_image, limits=limits), files)):
            if reason is None:
                _transfer(path, dst / name / path.name, length, move)
                counts[name] += 1
            else:
                reject(path, reason)
    return counts, bad


def _test_folder_note(root: Path, test_dir: Path, base: Path) -> str:
    """One line saying which folder of the source became the test set, and by what rule."""
    shown = _shown(test_dir, base)
    if test_dir.name == "val":
        return (f"test set: {shown} (the source's val/ folder, as in the iNaturalist-12K archive; "
                "validation is a stratified share of train/)")
    if (root / "val").is_dir():
        return (f"test set: {shown}; {_shown(root / 'val', base)} is not used (the source holds train/, val/ and "
                "test/: test/ wins over val/; validation is a stratified share of train/)")
    return f"test set: {shown}"


def _import_tree(base: Path, out: Path, policy: str, move: bool, shown_as: str, limits: ImageLimits) -> dict[str, Any]:
    """Normalise the dataset found under ``base`` into ``out/{train,test}``; return counts and bad files.

    A class folder left without a usable image is an error: the class could be neither trained nor
    tested, and DVC does not keep empty folders, so a checkout would silently lose the class.
    """
    root, train_dir, test_dir = find_dataset_root(base)
    counts: dict[str, dict[str, int]] = {}
    bad: list[dict[str, str]] = []
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for split, src in zip(SPLITS, (train_dir, test_dir)):
            counts[split], split_bad = _import_split(src, out / split, base, shown_as, policy, move, limits, pool)
            bad.extend(split_bad)
    if not counts["train"]:
        raise UserError(
            f"{train_dir.relative_to(base)} (in {shown_as}): no class folders in it; expected train/<class>/<image files>"
        )
    for split, src in zip(SPLITS, (train_dir, test_dir)):
        empty = [name for name, n in counts[split].items() if n == 0]
        if empty:
            rel = (src / empty[0]).relative_to(base).as_posix()
            skipped = sum(entry["path"].startswith(rel + "/") for entry in bad)
            raise UserError(
                f"{rel} (in {shown_as}): no usable image in this class folder ({skipped} bad file(s) skipped); every class "
                "needs images in train and in the test folder: add some, or remove the class folder from both"
            )
    return {"counts": counts, "bad_files": bad, "test_folder": test_dir.name,
            "test_folder_note": _test_folder_note(root, test_dir, base)}


def _count_tree(out: Path) -> dict[str, dict[str, int]]:
    return {split: {name: len(list_images(out / split / name)) for name in list_class_dirs(out / split)} for split in SPLITS}


def _archive_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name.lower().endswith(".zip") else (name or "download") + ".zip"


def _local_source(source: str, base: Path | None) -> Path:
    path = Path(source).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        path.stat()
    except OSError as exc:
        what = {errno.ENOENT: "no such file or folder", errno.ELOOP: "a symbolic link loop"}.get(exc.errno, exc.strerror)
        raise UserError(
            f"data.source = {source!r}: {what} ({path.absolute()}); expected one of "
            f"{', '.join(SOURCES)}, or the path of a local folder or .zip in the iNaturalist layout"
        ) from exc
    if path.is_file() and path.suffix.lower() != ".zip":
        raise UserError(f"data.source = {source!r}: a file source must be a .zip archive (or give the unzipped folder)")
    return path


def build_raw_dataset(
    cfg: DataConfig, seed: int, out_dir: str | Path, download_dir: str | Path, source_base: Path | None = None
) -> dict[str, Any]:
    """Build ``out_dir/{train,test}/<class>/*`` from ``cfg.source`` atomically; return the report.

    A relative local source is relative to ``source_base`` (default: the working directory)."""
    out_dir, download_dir = Path(out_dir), Path(download_dir)
    limits = ImageLimits.of(cfg)
    report: dict[str, Any] = {"source": cfg.source, "url": None, "sha256": None}
    archive: Path | None = None
    if cfg.source == "nature_12k":
        archive = download_dir / _archive_name(cfg.url)
        report["url"] = cfg.url
        report["sha256"] = fetch(cfg.url, archive, sha256=cfg.sha256, retries=cfg.retries, timeout_s=cfg.timeout_s)
    elif cfg.source != "synthetic":
        local = _local_source(cfg.source, source_base)
        if local.is_file():
            archive = local
            report["sha256"] = sha256_file(local)
    try:
        with atomic_dir(out_dir) as tmp:
            tmp.mkdir()
            if cfg.source == "synthetic":
                generate_synthetic(cfg.synthetic, seed, tmp)
                found: dict[str, Any] = {"counts": _count_tree(tmp), "bad_files": [], "test_folder": "test",
                                         "test_folder_note": "test set: the synthetic test/ split"}
            elif archive is not None:
                # inside the temp folder, so that a killed run leaves one temp behind, cleared by the next one
                with tempfile.TemporaryDirectory(prefix=".extract-", dir=tmp) as extracted:
                    # a corrupt download of ours, unpinned: delete it so that the next run fetches it again
                    safe_extract_zip(archive, extracted, discard_corrupt=cfg.source == "nature_12k" and cfg.sha256 is None)
                    found = _import_tree(Path(extracted), tmp, cfg.bad_images, move=True, shown_as=str(archive), limits=limits)
            else:
                found = _import_tree(local, tmp, cfg.bad_images, move=False, shown_as=str(local), limits=limits)
    except OSError as exc:  # a full disk, a read-only folder ...: nothing was left behind (atomic_dir)
        raise UserError(
            f"building {out_dir} failed: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; "
            f"{out_dir} was left as it was: free some space or fix the folder's permissions and run the stage again"
        ) from exc
    counts = found["counts"]
    report.update(
        classes=sorted(counts["train"]),
        counts=counts,
        total={split: sum(counts[split].values()) for split in SPLITS},
        bad_files=found["bad_files"],
        bad_files_policy=cfg.bad_images,
        test_folder=found["test_folder"],
        test_folder_note=found["test_folder_note"],
    )
    return report
