"""The learning-rate range test's figure (``inat-cnn lr-find``)."""

from __future__ import annotations

import os
from typing import Sequence

from matplotlib.figure import Figure

from .canvas import save_png


def lr_finding_plot(lrs: Sequence[float], losses: Sequence[float], suggestion: float, out_path: str | os.PathLike, title: str) -> Figure:
    """Smoothed training loss against the learning rate (log axis), the suggested rate marked."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    save_png(fig, out_path, title)
    return fig
