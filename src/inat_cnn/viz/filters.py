"""What the convolutions learnt: first-layer filters and one layer's feature maps."""

from __future__ import annotations

import os

import numpy as np
import torch
from matplotlib.figure import Figure

from .canvas import grid_shape, minmax, new_grid, save_png, to_display_image

MIN_FILTER_PIXELS = 48  # filters are upsampled (nearest) to at least this many pixels a side


def filter_image(weight: torch.Tensor) -> np.ndarray:
    """One filter ``(in, k, k)`` as a displayable image, min-max normalised on its own.

    RGB ``(k·s, k·s, 3)`` when it has 3 input channels, otherwise the mean over input
    channels in grayscale ``(k·s, k·s)``; ``s`` is the integer nearest-neighbour upsampling
    factor that makes the side at least :data:`MIN_FILTER_PIXELS`.
    """
    array = weight.detach().float().cpu().numpy()
    array = array.transpose(1, 2, 0) if array.shape[0] == 3 else array.mean(axis=0)
    array = minmax(array)
    scale = max(1, -(-MIN_FILTER_PIXELS // max(array.shape[:2])))
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def filter_grid(conv_weight: torch.Tensor, out_path: str | os.PathLike, title: str | None = None) -> Figure:
    """Write every filter of a conv weight ``(out, in, k, k)`` in a near-square grid; return the figure.

    The grid is :func:`~.canvas.grid_shape` of ``out`` (64 → 8×8, 32 → 4×8); each filter
    is normalised on its own (see :func:`filter_image`) and labelled with its index.
    """
    if conv_weight.dim() != 4:
        raise ValueError(f"expected a conv weight (out, in, kh, kw), got shape {tuple(conv_weight.shape)}")
    count, in_channels, kh, kw = conv_weight.shape
    rows, cols = grid_shape(count)
    fig, axes = new_grid(rows, cols, cell_w=0.9, cell_h=1.05)
    for index, ax in zip(range(count), axes.flat):
        ax.imshow(filter_image(conv_weight[index]), cmap="gray", interpolation="nearest")
        ax.set_title(str(index), fontsize=7, pad=2)
    colour = "RGB" if in_channels == 3 else f"mean of {in_channels} input channels"
    save_png(fig, out_path, title or f"first-layer filters: {count} × {kh}×{kw}, {colour}, each min-max normalised")
    return fig


def feature_map_grid(
    activations: torch.Tensor,
    out_path: str | os.PathLike,
    image: np.ndarray | torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Write one panel per channel of a layer's activations ``(C, H, W)`` for one image; return the figure.

    Panels use viridis, each scaled to its own min..max (a dead channel is uniformly dark).
    With ``image`` (uint8 HWC or float CHW in [0, 1]) the input is the first panel, so the
    grid holds ``C + 1`` panels laid out by :func:`~.canvas.grid_shape`.
    """
    if activations.dim() != 3:
        raise ValueError(f"expected activations (C, H, W), got shape {tuple(activations.shape)}")
    maps = activations.detach().float().cpu().numpy()
    panels = len(maps) + (image is not None)
    rows, cols = grid_shape(panels)
    fig, axes = new_grid(rows, cols, cell_w=1.3, cell_h=1.45)
    cells = iter(axes.flat)
    if image is not None:
        ax = next(cells)
        ax.imshow(to_display_image(image), cmap="gray")
        ax.set_title("input", fontsize=8, pad=2)
    for channel, (ax, fmap) in enumerate(zip(cells, maps)):
        ax.imshow(minmax(fmap), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"ch {channel}", fontsize=7, pad=2)
    save_png(fig, out_path, title or f"feature maps: {len(maps)} channels, {maps.shape[1]}×{maps.shape[2]}, "
                                     "each scaled to its own range")
    return fig
