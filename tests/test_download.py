"""The HTTP download (resume, retries, checksum) and safe unzip, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import stat
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from conftest import config

from inat_cnn.core.config import DataConfig
from inat_cnn.data.download import fetch, safe_extract_zip
from inat_cnn.data.raw import build_raw_dataset
from inat_cnn.core.errors import UserError
from test_data_sources import inat_files, zip_tree

FAST = {"retries": 3, "timeout_s": 5.0, "progress": False, "backoff_s": 0.01}


@dataclass
class Served:
    """What the test server serves and how it misbehaves; it records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)  # send half the body, then drop the connection
    stall_once: set[str] = field(default_factory=set)  # wait longer than the client's timeout
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> number of 503 answers first
    ignore_range: bool = False  # answer a Range request with 200 and the whole body
    length_lie: dict[str, int] = field(default_factory=dict)  # path -> added to the Content-Length announced
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        served: Served = self.server.served  # type: ignore[attr-defined]
        path, byte_range = self.path, self.headers.get("Range")
        served.requests.append((path, byte_range))
        if path not in served.files:
            self.send_error(404)
            return
        if served.fail_first.get(path, 0) > 0:
            served.fail_first[path] -= 1
            self.send_error(503)
            return
        if path in served.stall_once:
            served.stall_once.discard(path)
            time.sleep(1.0)
            return
        data = served.files[path]
        start = 0
        if byte_range and not served.ignore_range:
            start = int(byte_range.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body) + served.length_lie.get(path, 0)))
        self.end_headers()
        if path in served.cut_once:
            served.cut_once.discard(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Served]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.served = Served(base=f"http://127.0.0.1:{httpd.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.served  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A zip in the real nature_12K layout: inaturalist_12K/{train,val}/<class>/*.jpg."""
    path = tmp_path_factory.mktemp("zip") / "nature_12K.zip"
    return zip_tree(path, inat_files(("Aves", "Fungi", "Insecta"), n_train=4, n_val=2, prefix="inaturalist_12K/")).read_bytes()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------- fetch


def test_nature_12k_end_to_end(server: Served, archive: bytes, tmp_path: Path) -> None:
    server.files["/data/nature_12K.zip"] = archive
    digest = hashlib.sha256(archive).hexdigest()
    cfg = config(DataConfig, "data", source="nature_12k", url=server.url("/data/nature_12K.zip"), sha256=digest, retries=1)
    report = build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "downloads")
    assert report["source"] == "nature_12k" and report["url"] == cfg.url and report["sha256"] == digest
    assert report["classes"] == ["Aves", "Fungi", "Insecta"]
    assert report["total"] == {"train": 12, "test": 6} and report["bad_files"] == []
    assert report["test_folder"] == "val"
    assert sorted(p.name for p in (tmp_path / "raw/test/Fungi").iterdir()) == ["val_0.jpg", "val_1.jpg"]
    assert leftovers(tmp_path / "downloads") == ["nature_12K.zip"]
    assert leftovers(tmp_path) == ["downloads", "raw"]  # no temp or extraction folders left
    # a complete, matching archive is reused without asking the server again
    n_requests = len(server.requests)
    assert build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "downloads")["sha256"] == digest
    assert len(server.requests) == n_requests


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resume-206", "server-ignores-range"])
def test_resume_after_the_connection_drops(server: Served, archive: bytes, tmp_path: Path, ignore_range: bool) -> None:
    server.files["/a.zip"] = archive
    server.cut_once.add("/a.zip")
    server.ignore_range = ignore_range
    dest = tmp_path / "a.zip"
    assert fetch(server.url("/a.zip"), dest, **FAST) == hashlib.sha256(archive).hexdigest()
    assert dest.read_bytes() == archive
    assert leftovers(tmp_path) == ["a.zip"]
    assert server.requests[0] == ("/a.zip", None)
    assert server.requests[1] == ("/a.zip", f"bytes={len(archive) // 2}-")


def test_existing_part_answered_with_416(server: Served, archive: bytes, tmp_path: Path) -> None:
    server.files["/a.zip"] = archive
    part = tmp_path / "a.zip.part"
    part.write_bytes(archive)  # already complete: the server says 416, the sizes agree
    fetch(server.url("/a.zip"), tmp_path / "a.zip", **FAST)
    assert (tmp_path / "a.zip").read_bytes() == archive and len(server.requests) == 1
    part.write_bytes(archive + b"junk")  # longer than the file: restart from zero
    fetch(server.url("/a.zip"), tmp_path / "b.zip", **FAST)
    assert (tmp_path / "b.zip").read_bytes() == archive


def test_5xx_and_timeouts_are_retried(server: Served, archive: bytes, tmp_path: Path) -> None:
    server.files["/a.zip"] = archive
    server.fail_first["/a.zip"] = 2
    server.stall_once.add("/a.zip")
    fetch(server.url("/a.zip"), tmp_path / "a.zip", **(FAST | {"timeout_s": 0.3}))
    assert (tmp_path / "a.zip").read_bytes() == archive and len(server.requests) == 4


def test_sha256_mismatch_leaves_nothing_behind(server: Served, archive: bytes, tmp_path: Path) -> None:
    server.files["/nature_12K.zip"] = archive
    cfg = config(DataConfig, "data", source="nature_12k", url=server.url("/nature_12K.zip"), sha256="0" * 64)
    with pytest.raises(UserError, match=r"data\.sha256 expects 0{64} but the download has [0-9a-f]{64}"):
        build_raw_dataset(cfg, 0, tmp_path / "raw", tmp_path / "downloads")
    assert leftovers(tmp_path / "downloads") == []
    assert leftovers(tmp_path) == ["downloads"]


def test_404_is_not_retried(server: Served, tmp_path: Path) -> None:
    url = server.url("/missing.zip")
    with pytest.raises(UserError, match=rf"{url} failed: HTTP 404 .*data\.url"):
        fetch(url, tmp_path / "m.zip", **FAST)
    assert len(server.requests) == 1 and leftovers(tmp_path) == []


def test_unreachable_host_after_retries(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/nature_12K.zip"
    with pytest.raises(UserError, match=rf"could not download {url} after 3 attempts .*network.*data\.source"):
        fetch(url, tmp_path / "n.zip", **(FAST | {"retries": 2}))


def test_bad_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="only http:// and https://"):
        fetch("ftp://example.com/x.zip", tmp_path / "x.zip", **FAST)


# ------------------------------------------------------------------------------- unzip


def _symlink_entry(archive: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


@pytest.mark.parametrize(
    ("entry", "why"),
    [("../evil.txt", "'..'"), ("/tmp/evil.txt", "absolute"), ("C:/evil.txt", "absolute"),
     ("inaturalist_12K/a/../../../evil.txt", "'..'"), ("inaturalist_12K/link", "symbolic link")],
)  # fmt: skip
def test_unsafe_zip_entries_are_refused(tmp_path: Path, entry: str, why: str) -> None:
    path = zip_tree(tmp_path / "evil.zip", inat_files(n_train=2, n_val=1, prefix="inaturalist_12K/"))
    with zipfile.ZipFile(path, "a") as archive:
        if why == "symbolic link":
            _symlink_entry(archive, entry, "/etc/passwd")
        else:
            archive.writestr(entry, "gotcha")
    with pytest.raises(UserError, match=rf"evil\.zip: refusing to extract entry '{entry}': .*{why}"):
        safe_extract_zip(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    # through the download stage: nothing is left at out_dir either
    with pytest.raises(UserError, match="refusing"):
        build_raw_dataset(config(DataConfig, "data", source=str(path)), 0, tmp_path / "raw", tmp_path / "dl")
    assert leftovers(tmp_path) == ["evil.zip"]


def test_corrupt_zip_is_a_clear_error_and_atomic(tmp_path: Path, archive: bytes) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive[: len(archive) // 2])
    with pytest.raises(UserError, match=r"truncated\.zip: corrupt or truncated zip"):
        safe_extract_zip(truncated, tmp_path / "out")
    # a CRC error mid-extraction, after some files were written: out_dir must not appear
    files = inat_files(n_train=2, n_val=1, prefix="inaturalist_12K/")
    bad_crc = tmp_path / "badcrc.zip"
    with zipfile.ZipFile(bad_crc, "w", zipfile.ZIP_STORED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    raw = bytearray(bad_crc.read_bytes())
    last = list(files.values())[-1]
    offset = bytes(raw).rindex(last[100:140])
    raw[offset : offset + 8] = b"\x00" * 8
    bad_crc.write_bytes(bytes(raw))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/old.txt").write_text("a previous dataset")  # kept untouched on failure
    with pytest.raises(UserError, match=r"badcrc\.zip: corrupt or truncated zip archive \(Bad CRC-32"):
        build_raw_dataset(config(DataConfig, "data", source=str(bad_crc)), 0, tmp_path / "raw", tmp_path / "dl")
    assert leftovers(tmp_path / "raw") == ["old.txt"]
    assert leftovers(tmp_path) == ["badcrc.zip", "raw", "truncated.zip"]
    (tmp_path / "raw/old.txt").unlink()
    (tmp_path / "raw").rmdir()
    with pytest.raises(UserError, match="corrupt or truncated"):
        build_raw_dataset(config(DataConfig, "data", source=str(truncated)), 0, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()
