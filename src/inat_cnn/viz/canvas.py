"""Plotting plumbing: pyplot-free figures, near-square grids, display images, atomic PNGs."""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.files import atomic_path

DPI = 100
MAX_FIGURE_WIDTH_IN = 24.0


def grid_shape(count: int, max_aspect: float = 2.0) -> tuple[int, int]:
    """``(rows, cols)`` for ``count`` panels: near-square, never taller than wide, no empty row.

    An exact factorisation is used when its cols/rows ratio is at most ``max_aspect``
    (64 → 8×8, 32 → 4×8, 16 → 4×4, 48 → 6×8); otherwise rows = floor(sqrt(count)) and
    cols = ceil(count / rows), leaving fewer than ``rows`` blank cells (10 → 3×4, 7 → 2×4).
    """
    if count < 1:
        raise ValueError(f"grid_shape: count must be >= 1, got {count}")
    root = math.isqrt(count)
    rows = next(r for r in range(root, 0, -1) if count % r == 0)
    if count // rows <= max_aspect * rows:
        return rows, count // rows
    return root, math.ceil(count / root)


def new_grid(rows: int, cols: int, cell_w: float, cell_h: float) -> tuple[Figure, np.ndarray]:
    """A white Agg figure with a ``rows × cols`` array of axes, cells shrunk to fit 24 inches wide."""
    scale = min(1.0, MAX_FIGURE_WIDTH_IN / (cols * cell_w))
    fig = Figure(figsize=(cols * cell_w * scale, rows * cell_h * scale), dpi=DPI, facecolor="white")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        bare(ax)
    return fig, axes


def bare(ax: Axes) -> None:
    """No ticks and no frame; labels and titles still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)


def frame(ax: Axes, colour: str, width: float = 4.0) -> None:
    """Draw a coloured frame around ``ax``."""
    ax.set_frame_on(True)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _lay_out(fig: Figure, title: str | None) -> None:
    if title:  # placed in inches from the top, so tall and short figures look the same
        fig.suptitle(title, fontsize=11, y=1.0 - 0.08 / fig.get_figheight(), va="top")
    fig.tight_layout()  # makes room for the suptitle too


def save_png(fig: Figure, out_path: str | os.PathLike, title: str | None = None, dpi: int = DPI) -> None:
    """Lay out ``fig`` under an optional ``title`` and write it to ``out_path`` as a PNG atomically.

    The PNG is written to a temp file beside ``out_path`` and renamed onto it.
    """
    _lay_out(fig, title)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")


def png_bytes(fig: Figure, title: str | None = None, dpi: int = DPI) -> bytes:
    """``fig`` laid out as :func:`save_png` does, as PNG bytes (for a page that embeds its figures)."""
    _lay_out(fig, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def to_display_image(image: Any) -> np.ndarray:
    """An image ready for ``imshow``: HWC (or HW) uint8, or float clipped to [0, 1].

    Accepts uint8 HWC (as loaded by PIL) or float CHW in [0, 1] (a ``ToTensor`` output),
    as numpy or torch, and 1-channel images. Mean/std-normalised tensors must be
    de-normalised by the caller first.
    """
    # a tensor is recognised by its detach(), not isinstance: the compare and report stages draw
    # without importing torch (1.5 s a process)
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"expected an HWC/CHW RGB or HW grayscale image, got shape {tuple(np.shape(image))}")
    if array.dtype == np.uint8:
        return array
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def minmax(array: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant array becomes all zeros."""
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)
