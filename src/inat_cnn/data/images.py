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
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def sniff_format(head: bytes) -> str | None:
    """The image format named by the magic bytes at the start of a file, or None."""
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


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


def decode_rgb(path: str | Path):
    """Decode one image file to a uint8 (3, H, W) tensor (EXIF orientation applied); UserError if unreadable."""
    from torchvision.io import read_file

    from ..core.errors import UserError

    try:
        return decode_rgb_bytes(read_file(str(path)))
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be decoded as an image ({exc}); remove it or re-run the download stage") from exc


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


def check_image(path: str | Path) -> str | None:
    """None if ``path`` decodes to an RGB image the training loader can read, else a short reason."""
    from torchvision.io import read_file  # lazy: listing needs no torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if size == 0:
        return "empty file"
    try:
        data = read_file(str(path))
    except RuntimeError as exc:
        return f"unreadable: {_TV_PREFIX.sub('', str(exc))}"
    fmt = sniff_format(bytes(data[:16].tolist()))
    if fmt is None:
        return "not an image (unrecognised content)"
    if fmt not in ACCEPTED_FORMATS:
        return f"unsupported format {fmt} (only JPEG and PNG are accepted)"
    try:
        image = _decode_checked(data, fmt)
    except RuntimeError as exc:
        return f"truncated or corrupt {fmt}: {_TV_PREFIX.sub('', str(exc)).strip()}"
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
        return f"decodes to an unexpected shape {tuple(image.shape)}"
    return None


def list_class_dirs(root: str | Path) -> list[str]:
    """Sorted names of the class subdirectories of ``root`` (hidden and OS-metadata folders ignored)."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not _is_hidden(p))


def list_images(class_dir: str | Path) -> list[Path]:
    """Sorted regular files directly in ``class_dir`` (hidden files ignored); content is not checked."""
    return sorted(p for p in Path(class_dir).iterdir() if p.is_file() and not _is_hidden(p))
