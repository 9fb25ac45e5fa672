"""HTTP download with resume, retries and checksum, and a zip extraction that refuses unsafe entries."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

from tqdm import tqdm

from ..core.errors import UserError

CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0
USER_AGENT = "inat-cnn/0.1 (python urllib)"


class _Retry(Exception):
    """A transient failure: try again after a backoff (the .part is kept for resuming)."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _total_from_content_range(value: str | None) -> int | None:
    """The full size from ``Content-Range: bytes a-b/N`` or ``bytes */N``."""
    match = re.search(r"/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


def _body(response) -> Iterator[bytes]:
    """The response body in chunks; a network failure while reading becomes ``_Retry``."""
    while True:
        try:
            block = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, TLS errors, IncompleteRead
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if not block:
            return
        yield block


def _attempt(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    """One GET into ``part``, resuming from its size; returns when the body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return  # the part already holds the whole file
            part.unlink()
            raise _Retry(f"the partial download did not match the server's size ({offset} vs {total})") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from exc
        raise UserError(
            f"downloading {url} failed: HTTP {exc.code} {exc.reason}; check data.url "
            "(or set data.source to a local copy of the archive)"
        ) from exc
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        if status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                part.unlink()
                raise _Retry("the server answered a resume with the wrong byte range; restarting")
            expected = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none): start from zero
            offset, mode = 0, "wb"
            expected = int(length) if length is not None else None
        try:
            with open(part, mode) as fh, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
            ) as bar:  # fmt: skip
                for block in _body(response):
                    fh.write(block)
                    bar.update(len(block))
        except OSError as exc:  # the local disk, not the network (_body turns those into _Retry)
            kept = part.stat().st_size if part.exists() else 0
            raise UserError(
                f"cannot write the download to {part}: {exc.strerror or exc}; free some space (or fix the folder's "
                f"permissions) and run the stage again: the {kept} bytes already written are kept and resumed from"
            ) from exc
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise _Retry(f"the connection closed after {size} of {expected} bytes")


def fetch(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    progress: bool = True,
    backoff_s: float = 1.0,
) -> str:
    """Download ``url`` to ``dest`` and return its sha256.

    Data goes to ``dest + ".part"`` and is resumed from there with an HTTP Range request; transient
    failures (connection errors, timeouts, short bodies, 5xx) are retried ``retries`` times with
    exponential backoff from ``backoff_s``. ``dest`` appears only when complete (and matching
    ``sha256`` when pinned). An existing complete ``dest`` is reused when it matches.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise UserError(f"data.url = {url!r}: only http:// and https:// URLs can be downloaded")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        digest = sha256_file(dest)
        if sha256 is None or digest == sha256.lower():
            return digest
        dest.unlink()  # a stale or different archive: download again
    part = dest.with_suffix(dest.suffix + ".part")
    errors: list[str] = []
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
        try:
            _attempt(url, part, timeout_s, progress)
            break
        except _Retry as exc:
            errors.append(str(exc))
        except urllib.error.URLError as exc:  # includes refused connections and DNS failures
            errors.append(str(exc.reason))
        except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout, ssl.SSLError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    else:
        raise UserError(
            f"could not download {url} after {retries + 1} attempts (last error: {errors[-1]}); "
            "check the network connection and proxy settings, raise data.retries / data.timeout_s, "
            "or download the archive yourself and set data.source to its local path"
        )
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise UserError(
            f"{url}: checksum mismatch: data.sha256 expects {sha256.lower()} but the download has {digest}; "
            "the bad file was deleted. Fix data.sha256 (or set it to null) if the archive legitimately changed"
        )
    os.replace(part, dest)
    return digest


# A zip entry that inflates beyond both is refused before it is written: JPEG and PNG data is
# compressed already (deflate gains a few percent on it), while deflate reaches ~1000:1 on zeros:
# 2 GB of them fit in 2 MB of archive. 1 MiB keeps small, legitimately compressible files (a text
# note, a CSV) out of it.
MAX_ENTRY_RATIO = 100
RATIO_FROM_BYTES = 1 << 20


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_ENTRY_RATIO * max(info.compress_size, 1):
        return (f"inflates {info.compress_size:,} bytes to {info.file_size:,} (over {MAX_ENTRY_RATIO}:1; photos compress "
                "less than 2:1): not an image, perhaps a zip bomb; remove it from the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "climbs out of the folder with '..'"
    return None


def safe_extract_zip(zip_path: str | Path, dest_dir: str | Path, *, discard_corrupt: bool = False) -> None:
    """Extract ``zip_path`` into ``dest_dir``; unsafe entries or a corrupt archive raise UserError.

    Every entry is checked before anything is written: absolute paths, drive letters, ``..``
    components, symbolic links and entries whose declared size is over 100x their compressed size
    are refused (zipfile never inflates an entry beyond its declared size). ``discard_corrupt``: a corrupt archive is deleted
    (a download of ours: the next run fetches it again instead of failing on the same file).
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    hint = "delete it and run the stage again, or point data.source at a good copy"
    if discard_corrupt:
        hint = "the file was deleted: run the stage again to download it afresh (or set data.sha256 to pin the archive)"
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            for info in infos:
                reason = _unsafe_reason(info)
                if reason:
                    raise UserError(f"{zip_path}: refusing to extract entry {info.filename!r}: it {reason}")
            dest_dir.mkdir(parents=True, exist_ok=True)
            root = dest_dir.resolve()
            for info in infos:
                target = (dest_dir / info.filename.replace("\\", "/")).resolve()
                if not target.is_relative_to(root):  # belt and braces after _unsafe_reason
                    raise UserError(f"{zip_path}: refusing to extract entry {info.filename!r}: it leaves {dest_dir}")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        if discard_corrupt:
            zip_path.unlink(missing_ok=True)
        raise UserError(f"{zip_path}: corrupt or truncated zip archive ({exc}); {hint}") from exc
