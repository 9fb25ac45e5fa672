"""Test-set figures: a per-class grid of predictions and the confusion matrix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .canvas import DPI, frame, new_grid, save_png, to_display_image

CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"


@dataclass(frozen=True)
class Prediction:
    """One test image and what the model said about it."""

    image: np.ndarray | torch.Tensor  # uint8 HWC or float CHW in [0, 1]
    true_label: int
    pred_label: int
    confidence: float  # probability of ``pred_label``, in [0, 1]

    @property
    def correct(self) -> bool:
        return self.true_label == self.pred_label


def select_grid_samples(labels: Sequence[int], num_classes: int, per_class: int = 3) -> list[list[int]]:
    """Indices for the prediction grid: the first ``per_class`` samples of each class, in dataset order.

    Returns one list per class (``result[c]`` for class ``c``), shorter than ``per_class``
    when the class has fewer samples. Depends only on ``labels``, so the grid is the same
    on every run and for every model evaluated on the same test set.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rows: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(labels):
        label = int(label)
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} at index {index} is outside 0..{num_classes - 1}")
        if len(rows[label]) < per_class:
            rows[label].append(index)
    return rows


def prediction_grid(
    rows: Sequence[Sequence[Prediction]],
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    cols: int | None = None,
    title: str | None = None,
) -> Figure:
    """Write a grid with one row per true class and ``cols`` test images per row; return the figure.

    ``rows[c]`` holds the predictions for images of class ``c`` (``len(rows) ==
    len(class_names)``). Each cell shows the image, "true: X / pred: Y (93%)" and a frame,
    green when correct and red when wrong. A class with fewer than ``cols`` images leaves
    blank cells. ``cols`` defaults to the longest row. The figure has exactly
    ``len(rows) × cols`` axes.
    """
    if len(rows) != len(class_names):
        raise ValueError(f"{len(rows)} rows for {len(class_names)} classes: pass one row per class")
    longest = max((len(row) for row in rows), default=0)
    cols = max(longest, 1) if cols is None else cols
    if longest > cols:
        raise ValueError(f"a row has {longest} predictions but the grid has {cols} columns")
    for label, row in enumerate(rows):
        for p in row:
            if p.true_label != label:
                raise ValueError(f"row {label} ({class_names[label]}) holds an image of class {p.true_label}")

    fig, axes = new_grid(len(rows), cols, cell_w=2.3, cell_h=2.7)
    for label, row in enumerate(rows):
        axes[label, 0].set_ylabel(class_names[label], fontsize=11, fontweight="bold")
        if not row:
            axes[label, 0].text(0.5, 0.5, "no test images", ha="center", va="center", color="grey",
                                transform=axes[label, 0].transAxes)
        for ax, p in zip(axes[label], row):
            colour = CORRECT_COLOUR if p.correct else WRONG_COLOUR
            ax.imshow(to_display_image(p.image), cmap="gray")
            ax.set_title(f"true: {class_names[p.true_label]}\npred: {class_names[p.pred_label]} "
                         f"({p.confidence:.0%})", fontsize=9, color=colour)
            frame(ax, colour)
    save_png(fig, out_path, title)
    return fig


def confusion_matrix_png(
    cm: np.ndarray,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    normalise: bool = False,
    title: str | None = None,
) -> Figure:
    """Write an annotated confusion matrix (true class on rows, predicted on columns); return the figure.

    ``cm[i, j]`` counts images of class ``i`` predicted as ``j``. With ``normalise`` each
    row is divided by its total (so the diagonal is per-class recall) and cells show
    fractions; otherwise cells show counts. A class with no images gets a row of zeros.
    """
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {n} classes")
    if normalise:
        totals = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
        text = [[f"{v:.2f}" for v in row] for row in values]
    else:
        values = cm
        text = [[str(int(v)) for v in row] for row in cm]

    side = max(5.0, 0.55 * n + 2.5)
    fig = Figure(figsize=(side + 1.0, side), dpi=DPI, facecolor="white")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1.0 if normalise else max(float(values.max()), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = image.norm.vmax / 2
    fontsize = 10 if n <= 12 else 7
    for i in range(n):
        for j in range(n):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=fontsize,
                    color="white" if values[i, j] > threshold else "black")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalise else "confusion matrix (counts)"))
    save_png(fig, out_path)
    return fig

