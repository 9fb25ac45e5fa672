"""Download faults beyond test_download.py: a 200 answer to a Range request, a Content-Length that
lies (both ways), a full disk while downloading and while extracting. Same local HTTP server."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import config

import inat_cnn.data.download as download
from inat_cnn.core.config import DataConfig
from inat_cnn.data.download import fetch
from inat_cnn.data.raw import build_raw_dataset
from inat_cnn.core.errors import UserError
from test_download import FAST, Served, archive, leftovers, server  # noqa: F401  (fixtures)

URL_PATH = "/nature_12K.zip"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_raw_dataset retries with the default 1 s backoff; keep the retries, skip the waits."""
    monkeypatch.setattr(download, "MAX_BACKOFF_S", 0.0)


def nature_cfg(server: Served, sha256: str | None = None) -> DataConfig:
    return config(DataConfig, "data", source="nature_12k", url=server.url(URL_PATH), sha256=sha256, retries=2, timeout_s=5.0)


def build(cfg: DataConfig, tmp_path: Path) -> dict:
    return build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "downloads")


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A binary file whose writes fail with ENOSPC once ``room`` bytes are written (the part that fit stays)."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, block: bytes) -> int:
        if len(block) > self.room:
            self.fh.write(block[: self.room])
            self.room = 0
            raise disk_full()
        self.room -= len(block)
        return self.fh.write(block)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


# ------------------------------------------------------------------ 200 instead of 206


def test_200_answer_to_a_range_request_restarts_from_zero(server: Served, archive: bytes, tmp_path: Path) -> None:
    server.files[URL_PATH] = archive
    server.ignore_range = True
    dest = tmp_path / "nature_12K.zip"
    Path(f"{dest}.part").write_bytes(archive[:1000])  # an earlier run was interrupted here
    digest = fetch(server.url(URL_PATH), dest, sha256=hashlib.sha256(archive).hexdigest(), **FAST)
    assert server.requests == [(URL_PATH, "bytes=1000-")]  # it asked to resume; the server sent everything
    assert dest.read_bytes() == archive  # the part was rewritten, not appended to: no doubled prefix
    assert digest == hashlib.sha256(archive).hexdigest() and leftovers(tmp_path) == ["nature_12K.zip"]


# ------------------------------------------------------------- a Content-Length that lies


def test_content_length_larger_than_the_body_resumes_to_the_true_size(server: Served, archive: bytes, tmp_path: Path) -> None:
    """The server announces 100 bytes more than it sends: the short body is retried with a Range
    request, whose 416 answer (``bytes */N``) says the part already holds the whole file."""
    server.files[URL_PATH] = archive
    server.length_lie[URL_PATH] = 100
    report = build(nature_cfg(server, hashlib.sha256(archive).hexdigest()), tmp_path)
    assert server.requests == [(URL_PATH, None), (URL_PATH, f"bytes={len(archive)}-")]
    assert (tmp_path / "downloads/nature_12K.zip").read_bytes() == archive
    assert report["total"] == {"train": 12, "test": 6}


def test_content_length_larger_every_time_is_a_clear_error_after_retries(server: Served, archive: bytes, tmp_path: Path) -> None:
    """The same lie, and the server ignores Range: no attempt ever completes."""
    server.files[URL_PATH] = archive
    server.length_lie[URL_PATH] = 100
    server.ignore_range = True
    url = server.url(URL_PATH)
    with pytest.raises(UserError, match=rf"could not download {url} after 4 attempts \(last error: the connection "
                       rf"closed after {len(archive)} of {len(archive) + 100} bytes\)"):  # fmt: skip
        fetch(url, tmp_path / "a.zip", **FAST)
    assert len(server.requests) == 4
    assert leftovers(tmp_path) == ["a.zip.part"]  # kept for a later resume; never renamed to a.zip


def test_content_length_smaller_than_the_body(server: Served, archive: bytes, tmp_path: Path) -> None:
    """The client stops where the server said the body ends (HTTP gives it no other way to know).
    A sha256 pin turns that into a checksum error; without one the truncated zip fails to open
    (a zip's directory is at its end), the bad copy is deleted, and the next run downloads it again."""
    server.files[URL_PATH] = archive
    server.length_lie[URL_PATH] = -100
    assert fetch(server.url(URL_PATH), tmp_path / "a.zip", **FAST) == hashlib.sha256(archive[:-100]).hexdigest()
    assert (tmp_path / "a.zip").read_bytes() == archive[:-100]

    pinned = nature_cfg(server, hashlib.sha256(archive).hexdigest())
    with pytest.raises(UserError, match=r"checksum mismatch: data\.sha256 expects .* the bad file was deleted"):
        build(pinned, tmp_path / "pinned")
    assert leftovers(tmp_path / "pinned/downloads") == [] and not (tmp_path / "pinned/raw").exists()

    corrupt = r"nature_12K\.zip: corrupt or truncated zip archive .*the file was deleted: run the stage again"
    with pytest.raises(UserError, match=corrupt):
        build(nature_cfg(server), tmp_path / "unpinned")
    assert leftovers(tmp_path / "unpinned") == ["downloads"] and leftovers(tmp_path / "unpinned/downloads") == []

    del server.length_lie[URL_PATH]  # the server is fixed: the next run downloads a good copy
    assert build(nature_cfg(server), tmp_path / "unpinned")["sha256"] == hashlib.sha256(archive).hexdigest()


# ---------------------------------------------------------------------------- full disk


def test_disk_full_while_downloading_keeps_the_part_and_resumes(
    server: Served, archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[URL_PATH] = archive
    room = len(archive) // 3

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        return _FullDisk(fh, room) if mode in ("wb", "ab") else fh

    cfg = nature_cfg(server, hashlib.sha256(archive).hexdigest())
    with monkeypatch.context() as patch, pytest.raises(
        UserError, match=rf"cannot write the download to \S+nature_12K\.zip\.part: No space left on device; "
        rf"free some space .* the {room} bytes already written are kept and resumed from",
    ):  # fmt: skip
        patch.setattr(download, "open", open_on_a_full_disk, raising=False)
        build(cfg, tmp_path)
    assert len(server.requests) == 1  # a full disk is not retried
    assert leftovers(tmp_path) == ["downloads"]  # nothing extracted, no data/raw, no temp folders
    assert (tmp_path / "downloads/nature_12K.zip.part").read_bytes() == archive[:room]

    report = build(cfg, tmp_path)
    assert server.requests[1:] == [(URL_PATH, f"bytes={room}-")]
    assert report["sha256"] == hashlib.sha256(archive).hexdigest() and report["total"] == {"train": 12, "test": 6}
    assert leftovers(tmp_path / "downloads") == ["nature_12K.zip"]


def test_disk_full_while_extracting_is_a_clear_error_and_keeps_the_archive(
    server: Served, archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[URL_PATH] = archive
    copies = []
    real_copy = shutil.copyfileobj

    def copy_until_full(src, dst, length=0):
        copies.append(dst.name)
        if len(copies) > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst.name)
        real_copy(src, dst, length)

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/old.txt").write_text("the previous dataset")
    with monkeypatch.context() as patch, pytest.raises(
        UserError, match=r"building \S+raw failed: No space left on device \(\S+\.jpg\); \S+raw was left as it was"
    ):
        patch.setattr(shutil, "copyfileobj", copy_until_full)
        build(nature_cfg(server), tmp_path)
    assert leftovers(tmp_path) == ["downloads", "raw"] and leftovers(tmp_path / "raw") == ["old.txt"]
    assert (tmp_path / "downloads/nature_12K.zip").read_bytes() == archive  # intact: kept, not downloaded again

    n_requests = len(server.requests)
    assert build(nature_cfg(server), tmp_path)["total"] == {"train": 12, "test": 6}
    assert len(server.requests) == n_requests
