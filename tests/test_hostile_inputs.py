"""Hostile inputs on the data path: image headers that claim gigapixels, killed stages, file names
that are not UTF-8, class-folder entries that are not regular files, and a source with both val/
and test/.

The huge images are never decoded (they would take 10 GB): their size is read from the header and
refused, by ``download`` as a bad file, by ``prepare`` and ``predict`` as a UserError naming the file.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import re
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from conftest import PARAMS, REPO, copy_project, params_with, run, set_params, tool_env
from PIL import Image
from test_data_sources import inat_files, jpeg_bytes, local_cfg, write_tree

from inat_cnn.core.config import SyntheticConfig
from inat_cnn.core.errors import UserError
from inat_cnn.core.files import write_json
from inat_cnn.core.stage_runner import run_stage
from inat_cnn.data.images import DEFAULT_LIMITS, ImageLimits, check_image, list_images
from inat_cnn.data.prepared import prepare_dataset
from inat_cnn.data.preprocessing import Preprocessing
from inat_cnn.data.raw import build_raw_dataset
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.evaluation.predict import predict_images
from inat_cnn.models.build import build_model
from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec, save_checkpoint

HUGE = 60_000  # 60000 x 60000 px: 3.6 gigapixels, 10 GB decoded as RGB
OVER_LIMIT = r"60000x60000 px \(3600\.0 MP\) is over the 50 MP limit: too large to decode safely"
TOO_LONG = r"2000x100 px has an aspect ratio over the 10:1 limit"
NOT_UTF8 = "file name is not valid UTF-8; rename it"
BAD_NAME = os.fsdecode(b"\xff\xfe.jpg")  # on Linux '\udcff\udcfe.jpg': Python keeps the bytes as lone surrogates
BAD_NAME_SHOWN = "\\xff\\xfe.jpg"  # how reports and messages print it
CLASSES = ("Aves", "Fungi")
MiB = 2**20


# ----------------------------------------------------------------------------- hostile files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def sparse_huge_png(side: int = HUGE) -> bytes:
    """A real, valid 1-bit greyscale PNG of ``side`` x ``side`` zeros: 2 MB on disk, ``3 * side**2`` bytes decoded."""
    rows = bytes(1 + (side + 7) // 8) * 1000  # each row: filter byte 0, then the packed bits
    compressor = zlib.compressobj(1)
    idat = b"".join(compressor.compress(rows) for _ in range(side // 1000)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def patched_jpeg(width: int = HUGE, height: int = HUGE) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(7, size=(64, 48)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def patched_png(width: int = HUGE, height: int = HUGE) -> bytes:
    """A small real PNG whose IHDR is patched (its CRC too) to claim ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(8, size=(64, 48), fmt="PNG"))
    ihdr = data[16:29]  # after the signature, the chunk length and "IHDR"
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:33] = ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def long_png() -> bytes:
    """A real 2000x100 PNG: 0.2 MP, but 20:1."""
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 100), (90, 140, 60)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile() -> dict[str, tuple[bytes, str]]:
    """{file name: (content, a regex of the reason it is refused for)}."""
    return {
        "sparse.png": (sparse_huge_png(), OVER_LIMIT),
        "patched.jpg": (patched_jpeg(), OVER_LIMIT),
        "patched.png": (patched_png(), OVER_LIMIT),
        "long.png": (long_png(), TOO_LONG),
    }


def small_raw(root: Path) -> Path:
    """data/raw as download writes it: a small synthetic set, 2 classes."""
    generate_synthetic(SyntheticConfig(train_per_class=6, test_per_class=2, min_side=48, max_side=72, classes=CLASSES), 1, root)
    return root


def repo_layout(root: Path, hostile_files: dict[str, bytes] | None = None) -> Path:
    """A folder laid out like the repository for the prepare stage: params.yaml, data/raw, data/split;
    ``hostile_files`` are put straight into data/raw/test/Aves/ (as if download had been bypassed)."""
    raw = small_raw(root / "data" / "raw")
    for name, data in (hostile_files or {}).items():
        (raw / "test" / "Aves" / name).write_bytes(data)
    write_split(stratified_split(raw / "train", 0.25, 0, raw / "test"), root / "data" / "split")
    (root / "params.yaml").write_text(yaml.safe_dump(params_with({"prepare": {"side": 64, "workers": 2}})))
    return root


# ------------------------------------------------------------------ 1. header size limits


def test_header_sizes_are_refused_unread(hostile, tmp_path: Path):
    for name, (data, reason) in hostile.items():
        (tmp_path / name).write_bytes(data)
        assert re.match(reason, check_image(tmp_path / name) or ""), (name, check_image(tmp_path / name))
    assert len(hostile["sparse.png"][0]) < 3 * MiB  # small on disk: only its header tells
    # the limits are the caller's: a tighter one refuses a small image, a looser one takes the long one
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(size=(200, 150)))
    assert check_image(tmp_path / "ok.jpg") is None
    assert check_image(tmp_path / "ok.jpg", ImageLimits(100 * 100, 10.0)).startswith("200x150 px (0.0 MP) is over the 0.01 MP limit")
    assert check_image(tmp_path / "long.png", replace(DEFAULT_LIMITS, max_aspect_ratio=25.0)) is None


def test_the_largest_real_photos_pass_the_default_limits(real_photos: Path):
    """The largest shared photos are 2592x1944 (5 MP, 4:3); every shared photo passes (test_data_sources)."""
    big = sorted(p for p in (real_photos / "hymenoptera").rglob("*.jp*g") if Image.open(p).size[0] >= 2500)
    assert big and all(check_image(p) is None for p in big[:3])


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_download_reports_an_oversized_image_like_any_bad_file(hostile, policy: str, tmp_path: Path):
    src = write_tree(tmp_path / "src", inat_files(CLASSES, prefix=""))
    for name, (data, _) in hostile.items():
        (src / "train" / "Aves" / name).write_bytes(data)
    cfg = local_cfg(src, bad_images=policy)
    if policy == "fail":
        with pytest.raises(UserError, match=rf"^train/Aves/long\.png \(in {re.escape(str(src))}\): {TOO_LONG}.*; remove it, or set data\.bad_images: skip"):
            build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "dl")
        return
    report = build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "dl")
    reasons = {bad["path"]: bad["reason"] for bad in report["bad_files"]}
    assert sorted(reasons) == sorted(f"train/Aves/{name}" for name in hostile)
    for name, (_, reason) in hostile.items():
        assert re.match(reason, reasons[f"train/Aves/{name}"])
    assert report["total"] == {"train": 6, "test": 4}
    # the limits are params: raised, the long image is kept
    report = build_raw_dataset(cfg.model_copy(update={"max_aspect_ratio": 25.0}), 0, tmp_path / "raw", tmp_path / "dl")
    assert "train/Aves/long.png" not in {bad["path"] for bad in report["bad_files"]} and report["total"]["train"] == 7


@pytest.mark.parametrize("name", ["sparse.png", "patched.jpg", "long.png"])
def test_prepare_refuses_an_oversized_image_naming_it(hostile, name: str, tmp_path: Path):
    data, reason = hostile[name]
    root = repo_layout(tmp_path, {name: data})
    raw = root / "data" / "raw"
    with pytest.raises(UserError, match=rf"^{re.escape(str(raw / 'test' / 'Aves' / name))}: {reason}.*; remove it or re-run the download stage$"):
        prepare_dataset(root / "data/split", raw / "train", raw / "test", root / "data/prepared", side=32, workers=2)
    assert sorted(p.name for p in (root / "data/prepared").iterdir()) == ["train", "val"]  # no test, no temp


def test_predict_refuses_an_oversized_image_and_a_name_that_is_not_utf8(hostile, tmp_path: Path):
    preprocessing = Preprocessing((32, 32), source_size=48)
    spec = ModelSpec(SCRATCH_ARCH, {**PARAMS["model"], "blocks": 2, "filters": 4, "dense_units": 8, "input_size": 32}, list(CLASSES), preprocessing)
    save_checkpoint(tmp_path / "model.pt", build_model(spec).state_dict(), spec, epoch=0, metrics={})
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(size=(60, 40)))
    assert len(predict_images(tmp_path / "model.pt", [good], device="cpu")) == 1
    for name in ("sparse.png", "patched.jpg"):
        (tmp_path / name).write_bytes(hostile[name][0])
        with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / name))}: cannot be read as an image: {OVER_LIMIT}"):
            predict_images(tmp_path / "model.pt", [good, tmp_path / name], device="cpu")
    (tmp_path / BAD_NAME).write_bytes(good.read_bytes())
    with pytest.raises(UserError, match=rf"cannot be read as an image: {NOT_UTF8}"):
        predict_images(tmp_path / "model.pt", [tmp_path / BAD_NAME], device="cpu")


PEAK_RSS = (  # run argv[1:] and print its exit code and peak resident memory (KiB on Linux)
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _prepare_peak_rss(root: Path) -> tuple[int, float, str]:
    """(exit code, peak RSS in MiB, stderr) of `python stages/prepare.py` run in ``root``."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, str(REPO / "stages" / "prepare.py")],
                          cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    code, kib = proc.stdout.split()[-2:]
    return int(code), int(kib) / 1024, proc.stderr


def test_prepare_peak_memory_with_a_gigapixel_png_stays_that_of_a_clean_run(hostile, tmp_path: Path):
    """A 2 MB PNG claiming 60000x60000 px (10 GB decoded) among the test images, versus none."""
    clean = repo_layout(tmp_path / "clean")
    bomb = repo_layout(tmp_path / "bomb", {"sparse.png": hostile["sparse.png"][0]})
    code, clean_mib, err = _prepare_peak_rss(clean)
    assert code == 0, err
    code, bomb_mib, err = _prepare_peak_rss(bomb)
    print(f"\npeak RSS of the prepare stage: clean {clean_mib:.0f} MiB, with the 60000x60000 PNG {bomb_mib:.0f} MiB")
    last = err.strip().splitlines()[-1]  # after the progress bars
    assert code == 2 and last.startswith("error: data/raw/test/Aves/sparse.png: 60000x60000 px") and "Traceback" not in err, err
    assert bomb_mib < clean_mib + 100


# ------------------------------------------------------------------ 2. killed stages


def _run_until_temp_then_kill(repo: Path, script: str, folder: Path, pattern: str) -> list[Path]:
    """Start stages/``script``, SIGKILL it as soon as a temp matching ``pattern`` exists in ``folder``."""
    proc = subprocess.Popen([sys.executable, f"stages/{script}"], cwd=repo, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while not list(folder.glob(pattern)):
            assert proc.poll() is None, f"{script} ended (exit {proc.returncode}) before its temp showed up"
            assert time.monotonic() < deadline, f"no {pattern} in {folder} after 300 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = sorted(folder.glob(pattern))
    assert left and all(f".{proc.pid}." in p.name for p in left)  # named after the killed process
    return left


def _not_seen_by_git_or_dvc(repo: Path, temps: list[Path]) -> None:
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout
    assert "params.yaml" in status  # untracked files are listed (nothing is committed) ...
    assert ".tmp" not in status, status  # ... but no temp
    rels = [str(p.relative_to(repo)) for p in temps]
    assert run(["dvc", "check-ignore", *rels], repo).stdout.split() == rels  # never hashed into an out


def test_a_killed_download_or_prepare_leaves_no_temp_once_it_runs_again(tmp_path: Path):
    repo = copy_project(tmp_path / "repo")
    synthetic = {"train_per_class": 80, "test_per_class": 10, "min_side": 64, "max_side": 96, "classes": ["a", "b", "c"]}
    set_params(repo, {"data.synthetic": synthetic, "prepare.side": 64, "prepare.workers": 1})
    data = repo / "data"

    left = _run_until_temp_then_kill(repo, "download.py", data / "raw", ".raw.*.tmp")  # inside: DVC deletes it with the out
    _not_seen_by_git_or_dvc(repo, left)
    run([sys.executable, "stages/download.py"], repo)
    assert sorted(p.name for p in data.iterdir()) == [".gitignore", "raw"]  # the killed run's temp is gone
    run([sys.executable, "stages/stratified_split.py"], repo)

    left = _run_until_temp_then_kill(repo, "prepare.py", data / "prepared" / "train", ".train.*.tmp")
    _not_seen_by_git_or_dvc(repo, left)
    run([sys.executable, "stages/prepare.py"], repo)
    assert sorted(p.name for p in (data / "prepared").iterdir()) == ["test", "train", "val"]


# ------------------------------------------------------------------ 3. names that are not UTF-8


def test_a_file_name_that_is_not_utf8_is_reported_as_such_and_nothing_breaks_later(tmp_path: Path):
    src = write_tree(tmp_path / "src", inat_files(CLASSES, n_train=3, n_val=2))
    try:
        (src / "train" / "Aves" / BAD_NAME).write_bytes(jpeg_bytes(3))  # a good image under a bad name
    except OSError as exc:  # a file system that stores names as UTF-8 only
        pytest.skip(f"cannot create a file name that is not UTF-8 here: {exc}")
    report = build_raw_dataset(local_cfg(src), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["bad_files"] == [{"path": f"train/Aves/{BAD_NAME_SHOWN}", "reason": NOT_UTF8}]
    assert [p.name for p in list_images(tmp_path / "raw/train/Aves")] == ["train_0.jpg", "train_1.jpg", "train_2.jpg"]
    # what comes after: the report as JSON, the split CSVs
    write_json(tmp_path / "download.json", report)
    assert json.loads((tmp_path / "download.json").read_text())["bad_files"][0]["path"] == f"train/Aves/{BAD_NAME_SHOWN}"
    write_split(stratified_split(tmp_path / "raw/train", 0.25, 0, tmp_path / "raw/test"), tmp_path / "split")
    assert (tmp_path / "split/train.csv").read_text().count("\n") == 1 + 4

    with pytest.raises(UserError, match=rf"^train/Aves/{re.escape(BAD_NAME_SHOWN)} \(in .*\): {NOT_UTF8}; remove it"):
        build_raw_dataset(local_cfg(src, bad_images="fail"), 0, tmp_path / "raw2", tmp_path / "dl")
    (src / "train" / "Aves" / BAD_NAME).unlink()
    (src / "train" / os.fsdecode(b"Fung\xef")).mkdir()  # a class folder: an error under either policy
    with pytest.raises(UserError, match=r"^train/Fung\\xef \(in .*\): the class folder's name is not valid UTF-8; rename it$"):
        build_raw_dataset(local_cfg(src), 0, tmp_path / "raw3", tmp_path / "dl")


# ------------------------------------------------------------------ 4. entries that are not regular files


@contextmanager
def no_hang(seconds: float = 120) -> Iterator[None]:
    """Abort the whole test process with every thread's traceback if the block hangs (a FIFO read would)."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def special_entries(folder: Path) -> dict[str, str]:
    """Make every kind of non-regular entry in ``folder``; {name: the reason it is reported with}."""
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("ping.jpg", folder / "pong.jpg")
    os.symlink("pong.jpg", folder / "ping.jpg")
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(os.devnull, folder / "device.jpg")
    loop = r"^a symbolic link loop \(nothing to read\); remove it$"
    return {
        "dangling.jpg": r"^a broken symbolic link \(to nowhere\.jpg, which does not exist\)$",
        "loop.jpg": loop, "ping.jpg": loop, "pong.jpg": loop,
        "pipe.jpg": r"^not a regular file: a named pipe \(FIFO\)$",
        "device.jpg": r"^not a regular file: a character device$",
    }  # fmt: skip


def test_links_pipes_and_devices_in_a_class_folder_are_bad_files(tmp_path: Path):
    src = write_tree(tmp_path / "src", inat_files(CLASSES, n_train=3, n_val=2))
    expected = special_entries(src / "train" / "Fungi")
    os.symlink("train_0.jpg", src / "train" / "Fungi" / "alias.jpg")  # a link to a good image is read through
    with no_hang():
        report = build_raw_dataset(local_cfg(src), 0, tmp_path / "raw", tmp_path / "dl")
        with pytest.raises(UserError, match=r"^train/Fungi/dangling\.jpg \(in .*\): a broken symbolic link .*; remove it"):
            build_raw_dataset(local_cfg(src, bad_images="fail"), 0, tmp_path / "raw2", tmp_path / "dl")
    reasons = {bad["path"].removeprefix("train/Fungi/"): bad["reason"] for bad in report["bad_files"]}
    assert sorted(reasons) == sorted(expected)
    for name, reason in expected.items():
        assert re.match(reason, reasons[name]), (name, reasons[name])
    assert report["counts"]["train"] == {"Aves": 3, "Fungi": 4}
    assert (tmp_path / "raw/train/Fungi/alias.jpg").read_bytes() == (src / "train/Fungi/train_0.jpg").read_bytes()


def test_a_source_that_is_a_symlink_loop_is_one_clear_error(tmp_path: Path, monkeypatch, capsys):
    os.symlink("photos", tmp_path / "photos")
    with pytest.raises(UserError, match=r"^data\.source = '.*photos': a symbolic link loop \(.*photos\); expected one of"):
        build_raw_dataset(local_cfg(tmp_path / "photos"), 0, tmp_path / "raw", tmp_path / "dl")
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(params_with({"seed": 0, "data": {"source": "photos"}})))
    with pytest.raises(SystemExit) as exit_info:
        run_stage(runpy.run_path(str(REPO / "stages/download.py"))["main"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: data.source = 'photos': a symbolic link loop") and "\n" not in err


# ------------------------------------------------------------------ 5. which folder is the test set


def test_a_source_with_val_and_test_says_test_became_the_test_set(tmp_path: Path, monkeypatch, capsys):
    files = inat_files(CLASSES, n_train=3, n_val=2, prefix="nature/")
    files.update({f"nature/test/{name}/t{i}.jpg": jpeg_bytes(50 + i) for name in CLASSES for i in range(3)})
    src = write_tree(tmp_path / "src", files)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(REPO / "stages/download.py"))["main"](params_with({"seed": 0, "data": {"source": str(src)}}))
    printed = capsys.readouterr().out
    report = json.loads(Path("metrics/details/download.json").read_text())
    assert report["test_folder"] == "test" and report["total"] == {"train": 6, "test": 6}
    note = report["test_folder_note"]
    assert note.startswith("test set: nature/test; nature/val is not used") and "test/ wins over val/" in note
    assert note in printed.splitlines()
    assert sorted(p.name for p in list_images("data/raw/test/Aves")) == ["t0.jpg", "t1.jpg", "t2.jpg"]

    shutil.rmtree(src / "nature" / "test")  # the iNaturalist layout: val/ is the test set
    runpy.run_path(str(REPO / "stages/download.py"))["main"](params_with({"seed": 0, "data": {"source": str(src)}}))
    report = json.loads(Path("metrics/details/download.json").read_text())
    assert report["test_folder"] == "val" and report["test_folder_note"].startswith("test set: nature/val (the source's val/ folder")
    assert report["test_folder_note"] in capsys.readouterr().out.splitlines()
