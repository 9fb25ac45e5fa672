"""The figures only the report draws, as PNG bytes: sample training images and a model's training curves."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..data.prepared import PreparedSplit
from ..viz.canvas import new_grid, png_bytes, to_display_image


def sample_images(split: PreparedSplit, per_class: int) -> bytes:
    """The first ``per_class`` images of every class of ``split``: one column per class."""
    names = split.class_names
    fig, axes = new_grid(per_class, len(names), 1.3, 1.3)
    for col, name in enumerate(names):
        for row, index in enumerate(np.flatnonzero(split.labels == col)[:per_class]):
            axes[row, col].imshow(to_display_image(split.image(int(index))))
        axes[0, col].set_title(name, fontsize=9)
    return png_bytes(fig, f"{split.name} split: the first {per_class} images of each class")


def training_curves(curves: dict[tuple[str, str], list[float]], label: str) -> bytes:
    """Accuracy and loss per epoch, training vs validation (from the dvclive curves)."""
    fig = Figure(figsize=(9, 3.4))
    for i, (metric, ylabel) in enumerate((("acc", "accuracy"), ("loss", "cross-entropy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for split in ("train", "val"):
            values = curves.get((split, metric)) or []
            ax.plot(range(1, len(values) + 1), values, marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return png_bytes(fig, f"{label}: training curves")
