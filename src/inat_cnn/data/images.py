"""Image validation and listing shared by every data source.

An image is kept only if it is JPEG or PNG content (judged by its magic bytes, whatever the
extension) and decodes with the very call the training loader makes (``torchvision.io.decode_image``
to RGB, EXIF orientation applied). torchvision 0.29 raises on a truncated JPEG ("Image is
incomplete or truncated"), so a cut-off file is caught here, not mid-training.

Damage inside a JPEG's compressed data does not raise: libjpeg prints a warning ("Corrupt JPEG
data: premature end of data segment", "... N extraneous bytes before marker 0xd9") on the
process's stderr, fills what it lost with grey and returns an image. :func:`check_image` watches
file descriptor 2 while it decodes and rejects a JPEG that libjpeg called corrupt. Damage that
libjpeg decodes without a word (JPEG has no checksum) cannot be told from a real photo.

Nothing is decoded before its header is read: a decoded image takes 3 bytes a pixel whatever the
file's size, so a few-KB file claiming 60000x60000 px would take 10 GB. :class:`ImageLimits` (the
params ``data.max_image_pixels`` and ``data.max_aspect_ratio``) refuses such a file from the size in
its PNG IHDR or JPEG frame header (SOFn); a header that names no size is refused as corrupt.

Only regular files are read (a FIFO would block the read forever; a broken link or a link loop has
nothing to read), and only files whose name is valid UTF-8 (the split CSVs and the reports are UTF-8).

An image ends at its end marker (JPEG EOI, PNG IEND, found by walking the segments or chunks):
:func:`image_length`. Only those bytes are decoded and copied into the dataset; whatever follows is
dropped, whether it is the video of a phone's motion photo, a gain map, or 500 MB of junk (which
would otherwise cost its size twice: data/raw and DVC's cache).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from ..core.config import DataConfig

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
"""Suffixes of the accepted formats (for globbing; acceptance itself is by content)."""

IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypavif", 4, "AVIF"),
)
ACCEPTED_FORMATS = ("JPEG", "PNG")
# torchvision prefixes its messages with "function, /path/to/source.cpp:123, "
_TV_PREFIX = re.compile(r"^[\w()]+, \S+:\d+, ")
# libjpeg's warnings that mean the compressed data is damaged (pixels lost or decoded from garbage)
_JPEG_DAMAGE = re.compile(r"^(Corrupt JPEG data: .*|Premature end of JPEG file)$", re.MULTILINE)
_STDERR_LOCK = threading.Lock()  # one decode at a time while fd 2 is redirected, so warnings are attributable
# JPEG markers: the frame headers SOF0-SOF15 (C4 DHT, C8 JPG and CC DAC are not), and those without a length
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))  # fmt: skip
NOT_UTF8 = "file name is not valid UTF-8; rename it"


@dataclass(frozen=True)
class ImageLimits:
    """The largest image a header may announce for it to be decoded (``data.max_image_pixels``,
    ``data.max_aspect_ratio``): the decoded size, not the file's, is what a decode costs in memory."""

    max_pixels: int
    max_aspect_ratio: float

    @classmethod
    def of(cls, cfg: DataConfig) -> "ImageLimits":
        return cls(cfg.max_image_pixels, cfg.max_aspect_ratio)

    def problem(self, width: int, height: int) -> str | None:
        """None if a ``width`` x ``height`` image is within the limits, else why not."""
        if width * height > self.max_pixels:
            return (f"{width}x{height} px ({width * height / 1e6:.1f} MP) is over the {self.max_pixels / 1e6:g} MP "
                    "limit: too large to decode safely (downscale it)")
        if max(width, height) > self.max_aspect_ratio * min(width, height):
            return (f"{width}x{height} px has an aspect ratio over the {self.max_aspect_ratio:g}:1 limit "
                    "(its centre square would be a sliver of it; crop it)")
        return None


# for calls given no params (predict on a checkpoint alone): params.yaml's data.max_image_pixels and
# data.max_aspect_ratio, which tests/test_config.py checks these equal
DEFAULT_LIMITS = ImageLimits(max_pixels=50_000_000, max_aspect_ratio=10.0)


def sniff_format(head: bytes) -> str | None:
    """The image format named by the magic bytes at the start of a file, or None."""
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def _png_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, which must come first, right after the signature."""
    fh.seek(8)
    chunk = fh.read(16)  # length, "IHDR", width, height
    if len(chunk) < 16 or chunk[4:8] != b"IHDR":
        return None
    return int.from_bytes(chunk[8:12], "big"), int.from_bytes(chunk[12:16], "big")


def _jpeg_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the first frame header (SOFn), walking the marker segments after SOI."""
    fh.seek(2)
    while fh.read(1) == b"\xff":
        code = fh.read(1)
        while code == b"\xff":  # fill bytes
            code = fh.read(1)
        if not code or code[0] in (0xD9, 0xDA):  # the end, or image data before any frame header
            return None
        if code[0] in _JPEG_STANDALONE:
            continue
        wanted = 7 if code[0] in _JPEG_SOF else 2  # length [, precision, height, width]
        segment = fh.read(wanted)
        length = int.from_bytes(segment[:2], "big")
        if len(segment) < wanted or length < wanted:
            return None
        if code[0] in _JPEG_SOF:
            return int.from_bytes(segment[5:7], "big"), int.from_bytes(segment[3:5], "big")
        fh.seek(length - 2, os.SEEK_CUR)
    return None


def _jpeg_end(buf) -> int | None:
    """The offset just past the EOI marker that ends the primary image, or None if there is none.

    Marker segments are skipped by their length (an EXIF thumbnail's own EOI lies inside APP1); after
    each SOS (a progressive JPEG has several) the entropy-coded data runs to the next marker."""
    pos, size = 2, len(buf)
    while pos + 1 < size:
        if buf[pos] != 0xFF:
            return None
        code = buf[pos + 1]
        pos += 1 if code == 0xFF else 2  # fill bytes before a marker
        if code == 0xFF or code in _JPEG_STANDALONE:
            continue
        if code == 0xD9:
            return pos
        length = int.from_bytes(buf[pos : pos + 2], "big")
        if length < 2:
            return None
        pos += length
        if code == 0xDA and (pos := _next_marker(buf, pos)) == -1:  # SOS: the scan's data follows its header
            return None
    return None


def _next_marker(buf, pos: int) -> int:
    """The offset of the marker that ends entropy-coded data starting at ``pos``, or -1: an 0xFF
    followed by neither a stuffed 0x00, a restart marker RST0-7 nor another 0xFF (fill)."""
    while (pos := buf.find(b"\xff", pos)) != -1 and pos + 1 < len(buf):
        follower = buf[pos + 1]
        if follower not in (0x00, 0xFF) and not 0xD0 <= follower <= 0xD7:
            return pos
        pos += 1 if follower == 0xFF else 2
    return -1


def _png_end(fh: BinaryIO, size: int) -> int | None:
    """The offset just past the IEND chunk, walking the chunks from the signature, or None."""
    pos = 8
    while pos + 12 <= size:
        fh.seek(pos)
        head = fh.read(8)
        pos += 12 + int.from_bytes(head[:4], "big")  # length, type, data, crc
        if head[4:8] == b"IEND":
            return pos if pos <= size else None
    return None


def image_length(path: str | Path, fmt: str) -> int:
    """How many bytes of ``path`` (JPEG or PNG content) are the image: up to its end marker, or the
    whole file when it has none (a truncated file: the decoder says what is wrong with it)."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if fmt == "PNG":
            end = _png_end(fh, size)
        else:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:  # only the pages walked are read
                end = _jpeg_end(buf)
    return size if end is None else end


def _read_image(path: str | Path, fmt: str):
    """The image bytes of ``path`` (up to its end marker) as a uint8 tensor, for the decoder."""
    import torch

    with open(path, "rb") as fh:
        data = fh.read(image_length(path, fmt))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def header_problem(path: str | Path, limits: ImageLimits) -> tuple[str | None, str | None]:
    """(format, problem) judged from the first bytes of ``path`` alone: None as the problem when the
    file is JPEG or PNG content whose header names a size within ``limits``. Raises OSError."""
    with open(path, "rb") as fh:
        fmt = sniff_format(fh.read(16))
        if fmt is None:
            return None, "not an image (unrecognised content)"
        if fmt not in ACCEPTED_FORMATS:
            return fmt, f"unsupported format {fmt} (only JPEG and PNG are accepted)"
        size = _png_size(fh) if fmt == "PNG" else _jpeg_size(fh)
    if size is None:
        return fmt, f"truncated or corrupt {fmt}: no image size in its header"
    return fmt, limits.problem(*size)


def is_utf8(name: str) -> bool:
    """False for a file name holding bytes that are not UTF-8 (Python shows them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_problem(path: Path) -> str | None:
    """None if ``path`` is a regular file (or a link to one) with a UTF-8 name, else what it is; never opens it."""
    if not is_utf8(path.name):
        return NOT_UTF8
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (nothing to read); remove it"
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return f"unreadable: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file: {kind}"


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in IGNORED_NAMES


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 2 meanwhile (one holder at a time, process-wide)."""
    captured: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a detached daemon): nothing to watch
            yield captured
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def decode_rgb_bytes(data):
    """Encoded image bytes (a uint8 tensor) -> uint8 (3, H, W), EXIF orientation applied.

    The one decode call of the project: the download check and the training loader both use it.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import to_dtype

    image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)  # 16-bit PNG


def decode_rgb(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS):
    """Decode one image file to a uint8 (3, H, W) tensor (EXIF orientation applied); UserError if unreadable
    or if its header is beyond ``limits`` (checked before anything is decoded)."""
    from ..core.errors import UserError

    try:
        problem = file_problem(Path(path))
        if problem is None:
            fmt, problem = header_problem(path, limits)
        if problem is None:
            return decode_rgb_bytes(_read_image(path, fmt))
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be decoded as an image ({exc}); remove it or re-run the download stage") from exc
    raise UserError(f"{path}: {problem}; remove it or re-run the download stage")


def _decode_checked(data, fmt: str):
    """Decode like the training loader; RuntimeError on an error or (JPEG) on a libjpeg damage warning."""
    with _stderr_captured() as captured:
        image = decode_rgb_bytes(data)
    text = "".join(captured)
    damage = _JPEG_DAMAGE.findall(text) if fmt == "JPEG" else []
    other = _JPEG_DAMAGE.sub("", text).strip()
    if other:  # not ours to judge: pass it on
        print(other, file=sys.stderr)
    if damage:
        raise RuntimeError(damage[0])
    return image


def check_image(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> str | None:
    """None if ``path`` decodes to an RGB image the training loader can read, else a short reason.

    Anything but a regular file, and an image whose header is beyond ``limits``, is refused unread."""
    return inspect_image(path, limits)[0]


def inspect_image(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[str | None, int]:
    """(:func:`check_image`'s answer, the image's length in bytes: what to copy of the file)."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        return problem, 0
    try:
        if path.stat().st_size == 0:
            return "empty file", 0
        fmt, problem = header_problem(path, limits)
        if problem is not None:
            return problem, 0
        data = _read_image(path, fmt)
    except (OSError, ValueError) as exc:  # ValueError: mmap of a file that shrank to nothing meanwhile
        return f"unreadable: {getattr(exc, 'strerror', None) or exc}", 0
    try:
        image = _decode_checked(data, fmt)
    except RuntimeError as exc:
        return f"truncated or corrupt {fmt}: {_TV_PREFIX.sub('', str(exc)).strip()}", 0
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
        return f"decodes to an unexpected shape {tuple(image.shape)}", 0
    return None, len(data)


def list_entries(folder: str | Path) -> list[Path]:
    """Sorted entries of ``folder`` of any kind, hidden and OS-metadata ones left out."""
    return sorted(p for p in Path(folder).iterdir() if not _is_hidden(p))


def list_class_dirs(root: str | Path) -> list[str]:
    """Sorted names of the class subdirectories of ``root`` (hidden and OS-metadata folders ignored)."""
    return [p.name for p in list_entries(root) if p.is_dir()]


def list_images(class_dir: str | Path) -> list[Path]:
    """Sorted regular files directly in ``class_dir`` (hidden files ignored); content is not checked."""
    return [p for p in list_entries(class_dir) if p.is_file()]
