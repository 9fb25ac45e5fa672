"""The ``stratified_split`` stage's library: hold out a stratified share of ``data/raw/train``.

scikit-learn's ``StratifiedShuffleSplit`` (seeded) holds out ``val_fraction`` of the images with
each class's share kept: on balanced classes every class's val count is within 1 of
``val_fraction * n_class`` (its rounding can miss by up to ~1.3 on very unbalanced class sets).
Only directory listings are read; no image is decoded.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..core.errors import UserError
from ..core.files import write_text
from .images import list_class_dirs, list_images

CSV_HEADER = ("path", "label", "class_name")


class Row(NamedTuple):
    """One image: its path relative to the train folder (``Aves/0001.jpg``), class index and name."""

    path: str
    label: int
    class_name: str


@dataclass(frozen=True)
class SplitResult:
    """The split of one train folder: class names (index = label) and the train and val rows."""

    classes: tuple[str, ...]
    train: tuple[Row, ...]
    val: tuple[Row, ...]
    val_fraction: float
    seed: int

    def report(self) -> dict[str, Any]:
        """The metrics/split.json content."""
        counts = {name: {"train": 0, "val": 0} for name in self.classes}
        for part, rows in (("train", self.train), ("val", self.val)):
            for row in rows:
                counts[row.class_name][part] += 1
        return {
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "classes": list(self.classes),
            "counts": counts,
            "total": {"train": len(self.train), "val": len(self.val)},
        }


def _missing_raw(path: Path) -> UserError:
    return UserError(f"{path}: no such folder; run the download stage first (dvc repro download)")


def class_rows(root: Path, classes: Sequence[str]) -> list[Row]:
    """Every image of ``root/<class>/``, class by class, labelled with the class's index in ``classes``."""
    return [Row(f"{name}/{p.name}", label, name) for label, name in enumerate(classes) for p in list_images(root / name)]


def check_test_classes(classes: Sequence[str], test_dir: Path) -> None:
    """UserError unless ``test_dir`` exists with exactly the class folders ``classes`` (names only; no image is read)."""
    if not test_dir.is_dir():
        raise _missing_raw(test_dir)
    test_classes = list_class_dirs(test_dir)
    if test_classes != sorted(classes):
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise UserError(
            f"the class folders of {test_dir} differ from the training ones: only in train: {only_train or 'none'}; "
            f"only in test: {only_test or 'none'}; every class needs a folder in both (fix the data source)"
        )


def stratified_split(train_dir: str | Path, val_fraction: float, seed: int, test_dir: str | Path | None = None) -> SplitResult:
    """Split ``train_dir/<class>/*`` into train and val rows, stratified by class and seeded."""
    train_dir = Path(train_dir)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"data.val_fraction = {val_fraction!r} is not allowed; expected a number in (0, 1)")
    if not train_dir.is_dir():
        raise _missing_raw(train_dir)
    classes = list_class_dirs(train_dir)
    if len(classes) < 2:
        raise UserError(f"{train_dir}: {len(classes)} class folder(s) found; a classifier needs at least 2")
    if test_dir is not None:
        check_test_classes(classes, Path(test_dir))
    rows = class_rows(train_dir, classes)
    counts = np.bincount([row.label for row in rows], minlength=len(classes))
    for name, count in zip(classes, counts):
        if count < 2:
            raise UserError(
                f"{train_dir / name}: {count} image(s); every class needs at least 2 to split into train and val "
                "(add images or remove the folder from the data source)"
            )
    labels = np.array([row.label for row in rows])
    n_val = math.ceil(val_fraction * len(rows))
    if not len(classes) <= n_val <= len(rows) - len(classes):
        raise UserError(
            f"data.val_fraction = {val_fraction}: {n_val} of {len(rows)} images would be held out, but every one of "
            f"the {len(classes)} classes needs at least 1 image in train and in val; change data.val_fraction or add images"
        )
    from sklearn.model_selection import StratifiedShuffleSplit  # here: every stage reads splits, one makes them (0.7 s)

    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(rows)), labels))
    train = [rows[i] for i in train_idx]
    val = [rows[i] for i in val_idx]
    empty = sorted(set(classes) - {row.class_name for row in train})
    if empty:
        raise UserError(
            f"data.val_fraction = {val_fraction} leaves no training image for class(es) {empty}; "
            "lower data.val_fraction or add images to those classes"
        )
    return SplitResult(tuple(classes), tuple(sorted(train)), tuple(sorted(val)), val_fraction, seed)


def csv_text(rows: Sequence[Row]) -> str:
    """Rows in the split CSV format (header path,label,class_name)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def write_split(result: SplitResult, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/train.csv`` and ``out_dir/val.csv`` atomically; return the split report."""
    out_dir = Path(out_dir)
    write_text(out_dir / "train.csv", csv_text(result.train))
    write_text(out_dir / "val.csv", csv_text(result.val))
    return result.report()


@dataclass(frozen=True)
class SplitRows:
    path: Path
    items: list[tuple[str, int]]
    names: dict[int, str]  # label -> class name, as seen in this file

    def class_names(self) -> list[str]:
        """Class names indexed by label; the train split holds every class, so read them there."""
        if sorted(self.names) != list(range(len(self.names))):
            raise UserError(f"{self.path}: labels are not 0..N-1; re-run `dvc repro stratified_split`")
        return [self.names[i] for i in range(len(self.names))]


def read_split_csv(path: Path) -> SplitRows:
    """Rows of a split CSV (header path,label,class_name)."""
    if not path.is_file():
        raise UserError(f"{path}: split file not found; run `dvc repro stratified_split` first")
    items: list[tuple[str, int]] = []
    names: dict[int, str] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_HEADER:
            raise UserError(f"{path}: expected the columns {','.join(CSV_HEADER)}; re-run `dvc repro stratified_split`")
        for row in reader:
            label = int(row["label"])
            items.append((row["path"], label))
            names[label] = row["class_name"]
    if not items:
        raise UserError(f"{path}: the split holds no images; check data/raw/train and re-run the split")
    return SplitRows(path, items, names)
