"""The ``prepare`` stage's library: decode every image once into memory-mappable uint8 arrays.

Layout of ``data/prepared`` (each split built in a temp folder and renamed when complete; each
split is its own DVC out, so training depends on train and val alone and never on the test images)::

    <split>/meta.json     {"format", "split", "side", "class_names", "count"}
    <split>/images.npy    uint8 (N, 3, side, side): each image's centre square resized to ``side``
                          (:func:`~inat_cnn.data.preprocessing.square_image`)
    <split>/items.csv     path,label,class_name (the split CSV format); row i describes image i

for the splits train and val (``data/split``'s rows, images under ``data/raw/train``) and test
(every image of ``data/raw/test``, in the training classes' order). Training and evaluation read
batches straight from ``images.npy`` opened with ``np.load(mmap_mode="r")``: the operating
system's page cache holds it once, however many processes read it.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ..core.errors import UserError
from ..core.files import atomic_dir, write_json, write_text
from .images import DEFAULT_LIMITS, ImageLimits, decode_rgb
from .split import Row, SplitRows, check_test_classes, class_rows, csv_text, read_split_csv

FORMAT = 2  # 2: meta.json names the square's side "side"


def _rows(split: SplitRows) -> list[Row]:
    return [Row(p, label, split.names[label]) for p, label in split.items]


def _write_images(
    out: Path, rows: Sequence[Row], source: Path, side: int, workers: int, limits: ImageLimits, desc: str
) -> None:
    """Decode + square-resize every row's image into ``out`` (a new .npy), ``workers`` threads at once;
    UserError naming the file for one that does not decode or whose header is beyond ``limits``."""
    from .preprocessing import square_image  # here: readers of the cache (the report) never import torchvision

    images = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(rows), 3, side, side))

    def fill(index: int) -> None:
        images[index] = square_image(decode_rgb(source / rows[index].path, limits), side).numpy()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(fill, range(len(rows))), total=len(rows), desc=desc, mininterval=2.0, leave=False):
            pass
    images.flush()


def prepare_dataset(
    split_dir: Path, train_dir: Path, test_dir: Path, out_dir: Path, *, side: int, workers: int,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Build ``out_dir`` (see the module docstring) and return the metrics/prepare.json report.

    An image whose header is beyond ``limits`` stops it with a UserError before it is decoded."""
    train_csv = read_split_csv(split_dir / "train.csv")
    class_names = train_csv.class_names()
    train, val = _rows(train_csv), _rows(read_split_csv(split_dir / "val.csv"))
    check_test_classes(class_names, test_dir)  # test images are labelled in the training classes' order
    parts = {"train": (train, train_dir), "val": (val, train_dir), "test": (class_rows(test_dir, class_names), test_dir)}
    import torch  # here, as square_image: reading the cache needs numpy alone

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parallelism is one image per worker thread
    try:
        for name, (rows, source) in parts.items():
            with atomic_dir(out_dir / name) as tmp:
                tmp.mkdir()
                _write_images(tmp / "images.npy", rows, source, side, workers, limits, f"prepare {name}")
                write_text(tmp / "items.csv", csv_text(rows))
                meta = {"format": FORMAT, "split": name, "side": side, "class_names": class_names, "count": len(rows)}
                write_json(tmp / "meta.json", meta)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    counts = {name: len(rows) for name, (rows, _) in parts.items()}
    return {
        "side": side,
        "class_names": class_names,
        "counts": counts,
        "bytes": sum(f.stat().st_size for f in out_dir.rglob("images.npy")),
        "workers": workers,
        "seconds": round(seconds, 2),
        "images_per_s": round(sum(counts.values()) / seconds, 1),
    }


@dataclass(frozen=True)
class PreparedSplit:
    """One split of the cache: the memory-mapped images and what each one is."""

    name: str
    images: np.ndarray  # uint8 (N, 3, S, S), memory-mapped read-only
    labels: np.ndarray  # int64 (N,)
    paths: list[str]  # relative to the split's source folder
    class_names: list[str]

    @property
    def side(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as a uint8 (3, S, S) array (a copy, for figures)."""
        return np.array(self.images[index])


def read_meta(split_dir: Path) -> dict[str, Any]:
    """``split_dir``/meta.json: the split's square side, class names (index = label) and image count."""
    path = split_dir / "meta.json"
    if not path.is_file():
        raise UserError(f"{path}: prepared data not found; run `dvc repro prepare` first")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: written by another version of inat-cnn; run `dvc repro -f prepare`")
    return meta


def open_prepared(root: Path, name: str) -> PreparedSplit:
    """Open split ``name`` of the cache at ``root`` (memory-mapped; nothing is read into RAM yet)."""
    meta = read_meta(root / name)
    rows = read_split_csv(root / name / "items.csv")
    try:
        images = np.load(root / name / "images.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise UserError(f"{root / name / 'images.npy'}: unreadable ({exc}); run `dvc repro -f prepare`") from exc
    if images.shape != (len(rows.items), 3, meta["side"], meta["side"]) or images.dtype != np.uint8:
        raise UserError(
            f"{root / name / 'images.npy'}: holds {images.dtype} {images.shape}, expected uint8 "
            f"({len(rows.items)}, 3, {meta['side']}, {meta['side']}); run `dvc repro -f prepare`"
        )
    labels = np.array([label for _, label in rows.items], dtype=np.int64)
    return PreparedSplit(name, images, labels, [p for p, _ in rows.items], list(meta["class_names"]))


def open_prepared_splits(root: Path, names: Sequence[str], *, side: int | None = None) -> list[PreparedSplit]:
    """Open several splits that must belong together: one square side for all (``side`` when given).

    A cache mixed from two ``prepare`` runs (one killed between splits, or outs checked out from
    different experiments) is an error naming each split's side, never silently wrong scores."""
    splits = [open_prepared(root, name) for name in names]
    sides = {s.name: s.side for s in splits}
    if len(set(sides.values())) > 1 or (side is not None and any(v != side for v in sides.values())):
        found = ", ".join(f"{name} {value} px" for name, value in sides.items())
        wanted = f"; the model was built for {side} px" if side is not None else ""
        raise UserError(
            f"{root}: the prepared splits do not match: {found}{wanted}; rebuild them together with `dvc repro -f prepare`"
        )
    if len({tuple(s.class_names) for s in splits}) > 1:
        raise UserError(f"{root}: the prepared splits list different classes; rebuild them together with `dvc repro -f prepare`")
    return splits
