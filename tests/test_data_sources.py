"""Data sources of the download stage: synthetic, a local folder, a local zip, bad files, real photos.

The small-file helpers here (``jpeg_bytes``, ``write_tree``, ``zip_tree``) are shared with
test_download.py.
"""

from __future__ import annotations

import hashlib
import io
import runpy
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import config, params_with, replace
from PIL import Image

from inat_cnn.core.config import DataConfig, SyntheticConfig
from inat_cnn.data.images import check_image, list_class_dirs, list_images, sniff_format
from inat_cnn.data.raw import build_raw_dataset
from inat_cnn.data.split import stratified_split
from inat_cnn.data.synthetic import class_family, generate_synthetic
from inat_cnn.core.errors import UserError
from inat_cnn.core.stage_runner import run_stage

REPO = Path(__file__).resolve().parents[1]
TINY = SyntheticConfig(train_per_class=3, test_per_class=1, min_side=40, max_side=90, classes=("a", "b", "c"))


# ----------------------------------------------------------------------------- helpers


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (40, 30), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A small real image file (noise, so it compresses to a few KB)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def inat_files(classes: tuple[str, ...] = ("Aves", "Fungi"), n_train: int = 3, n_val: int = 2, prefix: str = "") -> dict[str, bytes]:
    """{relative path: bytes} of a dataset in the iNaturalist layout under ``prefix``."""
    files = {}
    for c, name in enumerate(classes):
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                files[f"{prefix}{split}/{name}/{split}_{i}.jpg"] = jpeg_bytes(seed=100 * c + 10 * i + len(split))
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def zip_tree(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in files.items():
            archive.writestr(rel, data)
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def local_cfg(source: Path, **changes) -> DataConfig:
    return config(DataConfig, "data", source=str(source), **changes)


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_valid_and_varied(tmp_path: Path) -> None:
    generate_synthetic(TINY, 7, tmp_path / "a")
    generate_synthetic(TINY, 7, tmp_path / "b")
    generate_synthetic(TINY, 8, tmp_path / "c")
    a, b, c = (tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    assert sorted(a) == sorted(f"{s}/{cls}/{i:04d}.jpg" for s, n in (("train", 3), ("test", 1)) for cls in "abc" for i in range(n))
    sizes = set()
    for rel in a:
        path = tmp_path / "a" / rel
        assert check_image(path) is None, rel
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert all(TINY.min_side <= side <= TINY.max_side for side in image.size)
            sizes.add(image.size)
    assert len(sizes) >= 8  # 12 images: sizes and aspect ratios vary


def test_synthetic_any_number_of_classes(tmp_path: Path) -> None:
    assert len({class_family(i) for i in range(100)}) == 100
    cfg = replace(TINY, train_per_class=2, test_per_class=1, min_side=32, max_side=40, classes=tuple(f"c{i:02d}" for i in range(17)))
    generate_synthetic(cfg, 0, tmp_path)
    for split, n in (("train", 2), ("test", 1)):
        assert list_class_dirs(tmp_path / split) == list(cfg.classes)
        assert all(len(list_images(tmp_path / split / c)) == n for c in cfg.classes)


def test_synthetic_source_through_build_raw_dataset(tmp_path: Path) -> None:
    report = build_raw_dataset(config(DataConfig, "data", synthetic=TINY), 3, tmp_path / "raw", tmp_path / "dl")
    assert report["source"] == "synthetic" and report["sha256"] is None and report["bad_files"] == []
    assert report["classes"] == ["a", "b", "c"]
    assert report["total"] == {"train": 9, "test": 3}
    assert report["counts"]["test"] == {"a": 1, "b": 1, "c": 1}
    assert not (tmp_path / "dl").exists()


# ------------------------------------------------------------------------ image checks


def test_check_image_accepts_png_and_grayscale_and_reports_bad_files(tmp_path: Path) -> None:
    good = jpeg_bytes(1, size=(120, 90))
    files = {
        "png_named.jpg": jpeg_bytes(2, fmt="PNG"),  # content decides, not the extension
        "gray.jpg": jpeg_bytes(3, mode="L"),
        "rgba.png": jpeg_bytes(4, mode="RGBA", fmt="PNG"),
        "upper.JPEG": good,
        "truncated.jpg": good[: len(good) // 2],
        "corrupt.jpg": good[:3] + bytes(200) + good[203:],
        "empty.jpg": b"",
        "text.jpg": b"this is not a photo\n",
        "anim.gif": jpeg_bytes(5, fmt="GIF"),
    }
    write_tree(tmp_path, files)
    reasons = {name: check_image(tmp_path / name) for name in files}
    assert reasons["png_named.jpg"] is None and reasons["gray.jpg"] is None
    assert reasons["rgba.png"] is None and reasons["upper.JPEG"] is None
    assert reasons["truncated.jpg"].startswith("truncated or corrupt JPEG: ")
    assert reasons["corrupt.jpg"].startswith("truncated or corrupt JPEG: ")
    assert "/" not in reasons["truncated.jpg"]  # torchvision's source-file prefix is stripped
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["text.jpg"] == "not an image (unrecognised content)"
    assert reasons["anim.gif"].startswith("unsupported format GIF")
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"


def test_listing_ignores_hidden_entries(tmp_path: Path) -> None:
    write_tree(tmp_path, {"b/1.jpg": b"x", "a/2.jpg": b"x", "a/1.jpg": b"x", "a/.DS_Store": b"x", ".git/x": b"x", "__MACOSX/a/1.jpg": b"x"})
    (tmp_path / "a" / "nested").mkdir()
    assert list_class_dirs(tmp_path) == ["a", "b"]
    assert [p.name for p in list_images(tmp_path / "a")] == ["1.jpg", "2.jpg"]


# ------------------------------------------------------------------------ local sources


def test_local_directory_source(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "mine", inat_files(("Aves", "Fungi", "Plantae"), prefix="nested/inaturalist_12K/"))
    report = build_raw_dataset(local_cfg(src), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["classes"] == ["Aves", "Fungi", "Plantae"]
    assert report["total"] == {"train": 9, "test": 6} and report["sha256"] is None
    assert report["test_folder"] == "val"
    for split, src_split in (("train", "train"), ("test", "val")):
        for cls in report["classes"]:
            for path in (src / "nested/inaturalist_12K" / src_split / cls).iterdir():
                assert (tmp_path / "raw" / split / cls / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["test", "train"]
    assert (src / "nested/inaturalist_12K/train/Aves/train_0.jpg").exists()  # a local source is copied, not moved


def test_local_zip_source(tmp_path: Path) -> None:
    archive = zip_tree(tmp_path / "data.zip", inat_files(prefix="inaturalist_12K/"))
    report = build_raw_dataset(local_cfg(archive), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert report["counts"] == {"train": {"Aves": 3, "Fungi": 3}, "test": {"Aves": 2, "Fungi": 2}}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def _bad_source(tmp_path: Path) -> Path:
    good = jpeg_bytes(9, size=(100, 80))
    files = inat_files(n_train=2, n_val=1)
    files |= {
        "train/Aves/corrupt.jpg": good[:3] + bytes(300) + good[303:],
        "train/Aves/truncated.jpg": good[: len(good) // 2],
        "train/Fungi/empty.jpg": b"",
        "train/Fungi/notes.jpg": b"hello\n",
        "val/Fungi/placeholder.gif": jpeg_bytes(1, fmt="GIF"),
        "train/Fungi/scan.png": jpeg_bytes(2, fmt="PNG"),
        "train/Aves/gray.jpeg": jpeg_bytes(3, mode="L"),
    }
    return write_tree(tmp_path / "src", files)


def test_bad_files_are_skipped_and_listed(tmp_path: Path) -> None:
    report = build_raw_dataset(local_cfg(_bad_source(tmp_path)), 0, tmp_path / "raw", tmp_path / "dl")
    reasons = {bad["path"]: bad["reason"] for bad in report["bad_files"]}
    assert sorted(reasons) == [
        "train/Aves/corrupt.jpg", "train/Aves/truncated.jpg", "train/Fungi/empty.jpg",
        "train/Fungi/notes.jpg", "val/Fungi/placeholder.gif",
    ]  # fmt: skip
    assert reasons["train/Aves/truncated.jpg"].startswith("truncated or corrupt JPEG")
    assert reasons["train/Aves/corrupt.jpg"].startswith("truncated or corrupt JPEG")
    assert reasons["train/Fungi/empty.jpg"] == "empty file"
    assert reasons["train/Fungi/notes.jpg"] == "not an image (unrecognised content)"
    assert reasons["val/Fungi/placeholder.gif"].startswith("unsupported format GIF")
    assert report["bad_files_policy"] == "skip"
    assert report["counts"] == {"train": {"Aves": 3, "Fungi": 3}, "test": {"Aves": 1, "Fungi": 1}}
    assert (tmp_path / "raw/train/Fungi/scan.png").is_file() and (tmp_path / "raw/train/Aves/gray.jpeg").is_file()


def test_bad_files_policy_fail_names_the_file(tmp_path: Path) -> None:
    cfg = local_cfg(_bad_source(tmp_path), bad_images="fail")
    with pytest.raises(UserError, match=r"train/Aves/corrupt\.jpg.*data\.bad_images"):
        build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()


def test_missing_or_wrong_sources_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.source = .*nowhere.*synthetic, nature_12k"):
        build_raw_dataset(local_cfg(tmp_path / "nowhere"), 0, tmp_path / "raw", tmp_path / "dl")
    (tmp_path / "photos.tar").write_bytes(b"x")
    with pytest.raises(UserError, match=r"must be a \.zip"):
        build_raw_dataset(local_cfg(tmp_path / "photos.tar"), 0, tmp_path / "raw", tmp_path / "dl")
    write_tree(tmp_path / "flat", {"Aves/1.jpg": jpeg_bytes()})
    with pytest.raises(UserError, match=r"train/ and val/ .*found: Aves"):
        build_raw_dataset(local_cfg(tmp_path / "flat"), 0, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()


# ----------------------------------------------------------------------- stage scripts


def test_stage_scripts_run_and_bad_params_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    params = params_with({"seed": 5, "data": {"synthetic": {"train_per_class": 3, "test_per_class": 1, "min_side": 32, "max_side": 40, "classes": ["x", "y"]}}})
    runpy.run_path(str(REPO / "stages/download.py"))["main"](params)
    runpy.run_path(str(REPO / "stages/stratified_split.py"))["main"](params)
    assert yaml.safe_load(Path("metrics/details/download.json").read_text())["total"] == {"train": 6, "test": 2}
    assert yaml.safe_load(Path("metrics/details/split.json").read_text())["total"] == {"train": 4, "val": 2}
    assert Path("data/split/val.csv").read_text().startswith("path,label,class_name\n")

    Path("params.yaml").write_text(yaml.safe_dump(params_with({"seed": 5, "data": {"source": "missing/photos"}})))
    with pytest.raises(SystemExit) as exit_info:
        run_stage(runpy.run_path(str(REPO / "stages/download.py"))["main"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.source = 'missing/photos': no such file or folder") and "\n" not in err


# ------------------------------------------------------------------------- real photos


# `real_photos` (conftest.py): ../shared/real_photos beside the repository, or a skip with the reason.


def test_real_flowers5_directory_source(real_photos: Path, tmp_path: Path) -> None:
    report = build_raw_dataset(local_cfg(real_photos / "flowers5"), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["classes"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert report["total"] == {"train": 500, "test": 200} and report["bad_files"] == []
    assert all(n == 100 for n in report["counts"]["train"].values())


def test_real_hymenoptera_reports_the_gif_then_splits(real_photos: Path, tmp_path: Path) -> None:
    src = real_photos / "hymenoptera"
    report = build_raw_dataset(local_cfg(src), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["bad_files"] == [{"path": "train/ants/imageNotFound.gif", "reason": report["bad_files"][0]["reason"]}]
    assert report["bad_files"][0]["reason"].startswith("unsupported format GIF")
    for split, src_split in (("train", "train"), ("test", "val")):
        for cls in ("ants", "bees"):
            expected = {p.name for p in list_images(src / src_split / cls)} - {"imageNotFound.gif"}
            assert {p.name for p in list_images(tmp_path / "raw" / split / cls)} == expected
    assert any(p.suffix == ".jpeg" for p in (tmp_path / "raw/train").rglob("*"))
    result = stratified_split(tmp_path / "raw/train", 0.2, 0, tmp_path / "raw/test")
    assert result.classes == ("ants", "bees")
    assert len(result.train) + len(result.val) == report["total"]["train"]
    for cls, n in report["counts"]["train"].items():
        assert abs(sum(r.class_name == cls for r in result.val) - 0.2 * n) <= 1
