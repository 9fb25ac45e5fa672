"""The stratified train/val split of data/raw/train (only directory listings are read, so files are empty)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.core.errors import UserError

UNBALANCED = {"Aves": 37, "Fungi": 9, "Insecta": 2, "Mammalia": 120, "Plantae": 3}


def make_raw(root: Path, train: dict[str, int], test: dict[str, int] | None = None) -> Path:
    """Empty files in ``root/train/<class>/`` (and ``root/test/<class>/`` when ``test`` is given)."""
    for split, counts in (("train", train), ("test", test or {})):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{split}_{i:03d}.jpg").touch()
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.33, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_class_val_share_within_one(tmp_path: Path, val_fraction: float, seed: int) -> None:
    make_raw(tmp_path, UNBALANCED)
    result = stratified_split(tmp_path / "train", val_fraction, seed)
    report = result.report()
    for name, n in UNBALANCED.items():
        counts = report["counts"][name]
        assert counts["train"] + counts["val"] == n
        assert abs(counts["val"] - val_fraction * n) <= 1, (name, counts)
        assert counts["train"] >= 1
    assert report["total"] == {"train": len(result.train), "val": len(result.val)}
    assert report["val_fraction"] == val_fraction and report["seed"] == seed


def test_a_class_left_without_training_images_is_a_clear_error(tmp_path: Path) -> None:
    make_raw(tmp_path, UNBALANCED)
    with pytest.raises(UserError, match=r"data.val_fraction = 0.8 leaves no training image for class\(es\) \['Insecta'\]"):
        stratified_split(tmp_path / "train", 0.8, 0)


def test_csvs_are_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "raw", UNBALANCED, {name: 2 for name in UNBALANCED})
    for name in UNBALANCED:  # test files never appear in the split, even with the same names
        (raw / "test" / name / "train_000.jpg").touch()
    outputs = {}
    for run, seed in (("a", 42), ("b", 42), ("c", 43)):
        result = stratified_split(raw / "train", 0.2, seed, raw / "test")
        report = write_split(result, tmp_path / run)
        assert report == result.report()
        outputs[run] = {name: (tmp_path / run / name).read_bytes() for name in ("train.csv", "val.csv")}
    assert outputs["a"] == outputs["b"]
    assert outputs["a"]["val.csv"] != outputs["c"]["val.csv"]
    train, val = read_rows(tmp_path / "a/train.csv"), read_rows(tmp_path / "a/val.csv")
    assert outputs["a"]["train.csv"].startswith(b"path,label,class_name\n")
    train_paths, val_paths = {r["path"] for r in train}, {r["path"] for r in val}
    assert not train_paths & val_paths
    every = {p.relative_to(raw / "train").as_posix() for p in (raw / "train").rglob("*.jpg")}
    assert train_paths | val_paths == every and len(train) + len(val) == len(every)
    classes = sorted(UNBALANCED)
    for row in train + val:
        assert row["path"].startswith(row["class_name"] + "/")
        assert classes[int(row["label"])] == row["class_name"]
        assert (raw / "train" / row["path"]).is_file() and "test_" not in row["path"]
    assert [r["path"] for r in val] == sorted(r["path"] for r in val)


@pytest.mark.parametrize("n_classes", [3, 7])
def test_any_number_of_classes(tmp_path: Path, n_classes: int) -> None:
    names = {f"class_{i}": 10 + i for i in range(n_classes)}
    make_raw(tmp_path, names, {name: 1 for name in names})
    result = stratified_split(tmp_path / "train", 0.25, 0, tmp_path / "test")
    assert result.classes == tuple(sorted(names))
    assert {row.label for row in result.val} == set(range(n_classes))


def test_test_class_mismatch_is_listed(tmp_path: Path) -> None:
    make_raw(tmp_path, {"Aves": 4, "Fungi": 4, "Plantae": 4}, {"Aves": 1, "Fungi": 1, "Reptilia": 1})
    with pytest.raises(UserError, match=r"only in train: \['Plantae'\]; only in test: \['Reptilia'\]"):
        stratified_split(tmp_path / "train", 0.2, 0, tmp_path / "test")


def test_empty_or_tiny_class_and_missing_folders(tmp_path: Path) -> None:
    make_raw(tmp_path, {"Aves": 4, "Fungi": 0})
    with pytest.raises(UserError, match=r"train/Fungi: 0 image\(s\); every class needs at least 2"):
        stratified_split(tmp_path / "train", 0.2, 0)
    (tmp_path / "train/Fungi/only.jpg").touch()
    with pytest.raises(UserError, match=r"train/Fungi: 1 image\(s\)"):
        stratified_split(tmp_path / "train", 0.2, 0)
    with pytest.raises(UserError, match=r"nowhere/train: no such folder; run the download stage"):
        stratified_split(tmp_path / "nowhere/train", 0.2, 0)
    (tmp_path / "train/Fungi/two.jpg").touch()
    with pytest.raises(UserError, match=r"test: no such folder; run the download stage"):
        stratified_split(tmp_path / "train", 0.2, 0, tmp_path / "test")
    with pytest.raises(UserError, match=r"data\.val_fraction = 1\.5"):
        stratified_split(tmp_path / "train", 1.5, 0)
