"""Comparison figures: validation accuracy per epoch and per-class test accuracy, one series per model."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .canvas import save_png


def learning_curves(curves: Mapping[str, Sequence[float]], out_path: str | os.PathLike) -> Figure:
    """Validation accuracy per epoch, one line per model."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_png(fig, out_path, "validation accuracy per epoch")
    return fig


def per_class_bars(per_class: Mapping[str, Mapping[str, float]], out_path: str | os.PathLike) -> Figure:
    """Grouped bars: for each class, the test accuracy (recall) of every model."""
    models = list(per_class)
    classes = list(per_class[models[0]])
    x = np.arange(len(classes))
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(7, 0.8 * len(classes) + 2), 4.5))
    ax = fig.add_subplot()
    for i, name in enumerate(models):
        ax.bar(x + (i - (len(models) - 1) / 2) * width, [per_class[name][c] for c in classes], width, label=name)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel("test accuracy (recall)")
    ax.set_ylim(0, 1.18)  # a band above 1.0 keeps the legend off the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=len(models), frameon=False)
    save_png(fig, out_path, "per-class test accuracy")
    return fig
