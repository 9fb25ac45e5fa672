"""The reliability diagram: accuracy against confidence per bin, before and after temperature scaling."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from .canvas import DPI, save_png

if TYPE_CHECKING:  # viz draws what it is given: it imports nothing of evaluation at run time
    from ..evaluation.calibration import ReliabilityBins

GAP_COLOUR = "#d73027"
BAR_COLOUR = "#4575b4"


def reliability_diagram(
    panels: dict[str, ReliabilityBins], out_path: str | os.PathLike, title: str | None = None
) -> Figure:
    """One panel per entry of ``panels`` (its key the panel's title, e.g. "before (T = 1)"): a bar per
    confidence bin at its accuracy, the gap to the bin's mean confidence hatched red, the diagonal of
    perfect calibration, the ECE in the corner; image counts per bin in a strip below."""
    fig = Figure(figsize=(4.6 * len(panels), 5.2), dpi=DPI, facecolor="white")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(4, 1))
    for col, (name, bins) in enumerate(panels.items()):
        ax = fig.add_subplot(grid[0, col])
        lows, width = bins.edges[:-1], bins.edges[1] - bins.edges[0]
        full = bins.counts > 0
        ax.bar(lows[full], bins.accuracy[full], width=width, align="edge", color=BAR_COLOUR, edgecolor="black",
               linewidth=0.5, label="accuracy")
        gap_low = [min(a, c) for a, c in zip(bins.accuracy[full], bins.confidence[full])]
        gap = abs(bins.accuracy[full] - bins.confidence[full])
        ax.bar(lows[full], gap, bottom=gap_low, width=width, align="edge", fill=False, hatch="///",
               edgecolor=GAP_COLOUR, linewidth=0.8, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(name)
        ax.text(0.04, 0.96, f"ECE {bins.ece:.3f}\n{int(bins.counts.sum())} images", transform=ax.transAxes,
                va="top", fontsize=10, bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.8})
        ax.legend(loc="lower right", fontsize=8)
        counts = fig.add_subplot(grid[1, col], sharex=ax)
        counts.bar(lows, bins.counts, width=width, align="edge", color="grey", edgecolor="black", linewidth=0.5)
        counts.set_xlabel("confidence (top-class probability)")
        counts.set_ylabel("images")
    save_png(fig, out_path, title)
    return fig
