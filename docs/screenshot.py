"""Screenshot an HTML page in headless Chromium and write it as a small PNG (the README's picture).

    python docs/screenshot.py reports/index.html docs/report.png [--width 1280] [--height 1500] [--scale 0.6]

Uses Debian's ``chromium`` (or ``chromium-browser``) from PATH with a fresh temporary profile, so
no user setting, extension or cache changes the picture, and the page is opened as a file: URL
(``reports/index.html`` is self-contained and fetches nothing). The capture is the top
``--height`` pixels of a ``--width`` wide window, scaled by ``--scale`` and reduced to a
256-colour palette to keep the committed PNG small; it is written through a temp file and renamed.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

BROWSERS = ("chromium", "chromium-browser")


def find_browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("docs/screenshot.py: no chromium on PATH (Debian: apt-get install chromium; .ci/chromium does it)")


def capture(page: Path, png: Path, width: int, height: int, profile: Path) -> None:
    """Chromium's own --screenshot: the window's viewport, at device scale 1."""
    cmd = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--force-device-scale-factor=1", f"--user-data-dir={profile}",
           f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"docs/screenshot.py: chromium could not screenshot {page} (exit {done.returncode}):\n{done.stderr[-2000:]}")


def shrink(raw: Path, out: Path, scale: float) -> None:
    """Scale and quantise to a palette PNG, written atomically (a temp beside ``out``, then renamed)."""
    with Image.open(raw) as image:
        image = image.convert("RGB")
        size = (round(image.width * scale), round(image.height * scale))
        small = image.resize(size, Image.LANCZOS).quantize(colors=256, method=Image.MEDIANCUT)
    tmp = out.with_name(f".{out.name}.tmp")
    small.save(tmp, format="PNG", optimize=True)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML file, e.g. reports/index.html")
    parser.add_argument("out", type=Path, help="the PNG to write, e.g. docs/report.png")
    parser.add_argument("--width", type=int, default=1280, help="window width in px (default: 1280)")
    parser.add_argument("--height", type=int, default=1500, help="captured height in px (default: 1500)")
    parser.add_argument("--scale", type=float, default=0.6, help="scale of the written PNG (default: 0.6)")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        sys.exit(f"docs/screenshot.py: {args.page} does not exist; build it first (dvc repro)")
    with tempfile.TemporaryDirectory(prefix="inat-cnn-shot-") as tmp:
        raw = Path(tmp) / "raw.png"
        capture(args.page, raw, args.width, args.height, Path(tmp) / "profile")
        shrink(raw, args.out, args.scale)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
