"""Every kind of bad or unusual image file, built for real, through the local-folder source under both
``data.bad_images`` policies; then whatever reached data/raw through DataLoader workers.

Outcomes: ``ok`` (kept, decodes to 3 channels, the right way up), ``skip`` (left out and listed by
path with a reason; ``fail`` stops on it naming the path), ``error`` (a clear UserError under either
policy), ``ignored`` (not part of any split: no effect, no report).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, config
from PIL import Image, ImageOps
from test_data_sources import inat_files, jpeg_bytes, write_tree

from inat_cnn.core.config import DataConfig
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.images import check_image, decode_rgb, list_class_dirs
from inat_cnn.data.prepared import open_prepared, prepare_dataset
from inat_cnn.data.preprocessing import BatchTransform, Preprocessing
from inat_cnn.data.raw import build_raw_dataset
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.core.errors import UserError

ROOT = "inaturalist_12K/"  # the dataset sits one folder down, as in the real archive
REAL_GIF = SHARED / "real_photos/hymenoptera/train/ants/imageNotFound.gif"
EMPTY = None  # a files-dict value meaning "an empty folder"


# ----------------------------------------------------------------------- building the files


def photo(size: tuple[int, int] = (96, 64), seed: int = 0) -> np.ndarray:
    """A smooth gradient plus mild noise, (H, W, 3) uint8: compresses like a photo, not like noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1)
    noise = np.random.default_rng(seed).integers(-20, 20, (h, w, 3))
    return (base + noise).clip(0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(photo()).convert("CMYK"), quality=95)


def png16() -> bytes:
    gradient = (np.arange(64)[:, None] * 1000 + np.arange(96)[None, :] * 10).astype(np.uint16)
    image = Image.fromarray(gradient)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def exif_rotated() -> bytes:
    """A 96x64 landscape JPEG whose EXIF Orientation (6) says: rotate 90° clockwise to show it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(photo((96, 64))), exif=exif.tobytes())


def corrupt_entropy() -> bytes:
    """48 garbage bytes (no 0xFF, so no fake marker) in the middle of the compressed scan data."""
    good = encode(Image.fromarray(photo((160, 120))), quality=90)
    scan = good.index(b"\xff\xda")  # start of scan; the entropy-coded data follows
    mid = (scan + len(good)) // 2
    junk = bytes(b for b in np.random.default_rng(0).integers(0, 255, 96, dtype=np.uint8).tobytes() if b != 0xFF)[:48]
    return good[:mid] + junk + good[mid + 48 :]


def corrupt_header() -> bytes:
    good = jpeg_bytes(9, size=(100, 80))
    return good[:3] + bytes(300) + good[303:]


def gif() -> bytes:
    return REAL_GIF.read_bytes() if REAL_GIF.is_file() else jpeg_bytes(5, fmt="GIF")


@dataclass(frozen=True)
class Case:
    kind: str
    files: dict  # relative to the dataset root -> bytes, or EMPTY for an empty folder
    outcome: str  # ok | skip | error | ignored
    path: str = ""  # the entry the outcome is about
    reason: str = ""  # regex for the report's reason or the error message
    shape: tuple[int, int] | None = None  # ok: decoded (height, width)
    fail_reason: str = ""  # error: the message under data.bad_images: fail, where it differs


def one_file(kind: str, rel: str, data, outcome: str, reason: str = "", shape=None) -> Case:
    return Case(kind, {rel: data}, outcome, rel, reason, shape)


CASES = [
    one_file("cmyk-jpeg", "train/Aves/cmyk.jpg", cmyk_jpeg(), "ok", shape=(64, 96)),
    one_file("grayscale-jpeg", "train/Aves/gray.jpg", jpeg_bytes(3, size=(96, 64), mode="L"), "ok", shape=(64, 96)),
    one_file("16-bit-png-named-jpg", "train/Aves/deep.jpg", png16(), "ok", shape=(64, 96)),
    one_file("png-named-jpg", "train/Aves/png.jpg", encode(Image.fromarray(photo()), "PNG"), "ok", shape=(64, 96)),
    one_file("rgba-png", "train/Aves/alpha.png", encode(Image.fromarray(photo()).convert("RGBA"), "PNG"), "ok", shape=(64, 96)),
    one_file("exif-rotated-jpeg", "train/Aves/rotated.jpg", exif_rotated(), "ok", shape=(96, 64)),  # portrait
    one_file("corrupt-jpeg-entropy", "train/Aves/garbled.jpg", corrupt_entropy(), "skip",
             r"^truncated or corrupt JPEG: Corrupt JPEG data: "),
    one_file("corrupt-jpeg-header", "train/Aves/corrupt.jpg", corrupt_header(), "skip", r"^truncated or corrupt JPEG: "),
    one_file("truncated-jpeg", "train/Aves/cut.jpg", jpeg_bytes(9, size=(100, 80))[:1500], "skip",
             r"^truncated or corrupt JPEG: Image is incomplete or truncated$"),
    one_file("zero-byte", "val/Fungi/empty.jpg", b"", "skip", r"^empty file$"),
    one_file("gif", "train/Fungi/imageNotFound.gif", gif(), "skip", r"^unsupported format GIF \(only JPEG and PNG"),
    one_file("text-named-jpg", "train/Fungi/notes.jpg", b"field notes, 3 June\n", "skip", r"^not an image \(unrecognised content\)$"),
    Case("folder-in-class-folder", {"train/Aves/more/1.jpg": jpeg_bytes(1)}, "skip", "train/Aves/more",
         r"^a folder inside a class folder \(classes are one level deep: its files are not used\)$"),
    one_file("file-beside-class-folders", "train/README.txt", b"10 classes\n", "skip", r"^a file outside the class folders"),
    one_file("empty-class-folder-train", "train/Mammalia", EMPTY, "error",
             r"train/Mammalia \(in .*\): no usable image in this class folder \(0 bad file\(s\) skipped\)"),
    Case("empty-class-folder-test", {"train/Mammalia/1.jpg": jpeg_bytes(1), "val/Mammalia": EMPTY}, "error",
         "val/Mammalia", r"val/Mammalia \(in .*\): no usable image in this class folder \(0 bad file\(s\) skipped\)"),
    Case("class-with-only-bad-files", {"train/Mammalia/1.jpg": jpeg_bytes(1), "val/Mammalia/x.jpg": b""}, "error",
         "val/Mammalia", r"val/Mammalia \(in .*\): no usable image in this class folder \(1 bad file\(s\) skipped\)",
         fail_reason=r"val/Mammalia/x\.jpg \(in .*\): empty file; remove it, or set data\.bad_images: skip"),
    Case("__MACOSX-beside-the-dataset", {f"../__MACOSX/{ROOT}train/Aves/._0.jpg": b"\x00\x05\x16\x07",
                                         f"../__MACOSX/{ROOT}val/Aves/._0.jpg": b"\x00\x05\x16\x07"}, "ignored"),
    one_file("README-beside-the-dataset", "../README.txt", b"iNaturalist 12K\n", "ignored"),
    one_file("stray-folder-beside-train-val", "extras/map.jpg", jpeg_bytes(2), "ignored"),
]  # fmt: skip


def make_source(folder: Path, cases: list[Case]) -> Path:
    files = inat_files(("Aves", "Fungi"), n_train=3, n_val=2, prefix=ROOT)
    for case in cases:
        for rel, data in case.files.items():
            if data is EMPTY:
                (folder / ROOT / rel).mkdir(parents=True)
            else:
                files[(Path(ROOT) / rel).as_posix()] = data
    return write_tree(folder, files)


def build(source: Path, out: Path, policy: str) -> dict:
    return build_raw_dataset(config(DataConfig, "data", source=str(source), bad_images=policy), 0, out / "raw", out / "dl")


def in_raw(raw: Path, rel: str) -> Path:
    """Where a source entry lands in data/raw: the archive's val/ is the test split."""
    split, *rest = Path(rel).parts
    return raw.joinpath("test" if split == "val" else split, *rest)


# --------------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("policy", ["skip", "fail"])
@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_each_kind_under_each_policy(case: Case, policy: str, tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", [case])
    raw = tmp_path / "out/raw"
    shown = ROOT + case.path  # paths are reported relative to the source folder
    if case.outcome == "error" or (case.outcome == "skip" and policy == "fail"):
        if case.outcome == "skip":
            reason = case.reason.lstrip("^").rstrip("$")
            expected = rf"^{re.escape(shown)} \(in {re.escape(str(source))}\): {reason}.*; remove it, or set data\.bad_images: skip"
        else:
            expected = case.fail_reason if policy == "fail" and case.fail_reason else case.reason
        with pytest.raises(UserError, match=expected):
            build(source, tmp_path / "out", policy)
        assert not raw.exists()
        return
    report = build(source, tmp_path / "out", policy)
    if case.outcome == "skip":
        assert [bad["path"] for bad in report["bad_files"]] == [shown]
        assert re.search(case.reason, report["bad_files"][0]["reason"]), report["bad_files"]
        assert not in_raw(raw, case.path).exists()
    else:
        assert report["bad_files"] == []
    assert report["total"] == {"train": 6 + (case.outcome == "ok"), "test": 4}
    assert list_class_dirs(raw / "train") == list_class_dirs(raw / "test") == ["Aves", "Fungi"]
    if case.outcome == "ok":
        kept = in_raw(raw, case.path)
        assert check_image(kept) is None and kept.read_bytes() == case.files[case.path]  # copied as is
        image = decode_rgb(kept)
        assert image.dtype in (torch.uint8, torch.uint16) and image.shape == (3, *case.shape)


# ----------------------------------------------------------------------- pixels of the ok kinds


def test_the_accepted_kinds_decode_to_the_right_pixels(tmp_path: Path) -> None:
    files = {c.kind: c.files[c.path] for c in CASES if c.outcome == "ok"}
    write_tree(tmp_path, {f"{kind}.jpg": data for kind, data in files.items()})
    decoded = {kind: decode_rgb(tmp_path / f"{kind}.jpg") for kind in files}
    # EXIF orientation 6: the 96x64 landscape comes out 64 wide, 96 high, turned like PIL turns it
    assert tuple(decoded["exif-rotated-jpeg"].shape) == (3, 96, 64)
    with Image.open(io.BytesIO(files["exif-rotated-jpeg"])) as stored:
        assert stored.size == (96, 64)  # stored landscape
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert upright.shape == (96, 64, 3)
    assert np.abs(decoded["exif-rotated-jpeg"].permute(1, 2, 0).numpy().astype(int) - upright).mean() < 2
    # CMYK: the colours survive (inverted or swapped channels would be ~100 off)
    assert np.abs(decoded["cmyk-jpeg"].permute(1, 2, 0).numpy().astype(int) - photo()).mean() < 6
    gray = decoded["grayscale-jpeg"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.equal(decoded["png-named-jpg"].permute(1, 2, 0), torch.from_numpy(photo()))  # lossless
    assert torch.equal(decoded["rgba-png"].permute(1, 2, 0), torch.from_numpy(photo()))  # alpha dropped
    deep = decoded["16-bit-png-named-jpg"]  # 16-bit values scaled to 8 bits like every other image
    assert deep.dtype == torch.uint8 and int(deep[0, 1, 2]) == 1020 >> 8 and torch.equal(deep[0], deep[2])
    # the garbled JPEG is what a DataLoader worker would have got without the check: no exception at all
    garbled = decode_rgb(write_tree(tmp_path, {"g.jpg": corrupt_entropy()}) / "g.jpg")
    assert tuple(garbled.shape) == (3, 120, 160)


def test_decode_rgb_gives_uint8_for_16_bit_png(tmp_path: Path) -> None:
    (tmp_path / "deep.jpg").write_bytes(png16())
    assert decode_rgb(tmp_path / "deep.jpg").dtype == torch.uint8


# ------------------------------------------------------------------------- all of them at once


def test_all_kinds_together_then_the_prepared_cache(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Every non-error kind in one source: the report lists exactly the skipped ones; everything
    kept then goes through the split, the prepare stage's 2 decoding threads and the batch loader
    without an error or a decoder warning."""
    cases = [c for c in CASES if c.outcome != "error"]
    report = build(make_source(tmp_path / "src", cases), tmp_path / "out", "skip")
    assert sorted(bad["path"] for bad in report["bad_files"]) == sorted(ROOT + c.path for c in cases if c.outcome == "skip")
    n_ok = sum(c.outcome == "ok" for c in cases)
    assert report["total"] == {"train": 6 + n_ok, "test": 4}
    capfd.readouterr()
    raw = tmp_path / "out/raw"
    write_split(stratified_split(raw / "train", 0.25, 0, raw / "test"), tmp_path / "split")
    prepare_dataset(tmp_path / "split", raw / "train", raw / "test", tmp_path / "prepared", side=40, workers=2)
    evaluate = BatchTransform(Preprocessing((32, 32), source_size=40), augment=False)
    counts = {}
    for split in ("train", "val", "test"):
        prepared = open_prepared(tmp_path / "prepared", split)
        counts[split] = len(prepared)
        images = torch.cat([x for x, _ in BatchLoader(prepared, 4, torch.device("cpu"), evaluate)])
        assert images.shape == (len(prepared), 3, 32, 32) and torch.isfinite(images).all()
        assert images.abs().max() < 3  # normalised: 16-bit values were scaled, not taken as 0..65535
    assert counts["train"] + counts["val"] == report["total"]["train"] == sum(p.is_file() for p in (raw / "train").rglob("*"))
    assert counts["test"] == report["total"]["test"] == sum(p.is_file() for p in (raw / "test").rglob("*"))
    err = capfd.readouterr().err
    assert "Corrupt JPEG" not in err and "Traceback" not in err, err
