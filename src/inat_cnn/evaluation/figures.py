"""The evaluate stages' figures, drawn by :mod:`inat_cnn.viz` from a :class:`.evaluate.TestRun`.

In ``plots_dir`` (file names: core.outputs): the confusion matrix, the predictions grid (one row per
class, ``grid_cols`` images each), the reliability diagram (ECE bins before and after the checkpoint's
temperature), the first conv's filters, the first activation's feature maps (test image ``sample_index``)
and guided back-propagation (``guided_backprop_neurons`` channels of the last conv block).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.config import EvaluateConfig
from ..core.outputs import (
    CONFUSION_PNG, FEATURE_MAPS_PNG, FILTERS_PNG, GUIDED_BACKPROP_PNG, PREDICTIONS_PNG, RELIABILITY_PNG,
)
from ..data.preprocessing import BatchTransform
from ..models.activations import is_activation
from ..viz.calibration import reliability_diagram
from ..viz.filters import feature_map_grid, filter_grid
from ..viz.guided_backprop import guided_backprop, guided_backprop_grid, top_channels
from ..viz.predictions import Prediction, confusion_matrix_png, prediction_grid, select_grid_samples
from ..viz.probe import first_conv, layer_activations
from .calibration import ECE_BINS, reliability_bins
from .evaluate import TestRun
from .metrics import confusion
from .predictions import softmax


def draw_test_figures(run: TestRun, cfg: EvaluateConfig, plots_dir: Path) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    _prediction_figures(run, cfg.grid_cols, plots_dir)
    _model_figures(run, cfg, plots_dir)


def _last_conv_layer(model: nn.Module) -> nn.Module:
    """The layer whose channels guided backprop explains: the scratch CNN's last block, else the last Conv2d."""
    if hasattr(model, "last_conv_block"):
        return model.last_conv_block()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


def _first_activation(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if is_activation(m))


def _prediction_figures(run: TestRun, grid_cols: int, plots_dir: Path) -> None:
    """The confusion matrix, the predictions grid and the reliability diagram (its after panel only where T was fitted)."""
    names, labels, probs, temperature = run.names, run.labels, run.probs, run.temperature
    preds = probs.argmax(1)
    confusion_matrix_png(confusion(labels, preds, len(names)), names, plots_dir / CONFUSION_PNG,
                         title="test confusion matrix")
    rows = [
        [Prediction(run.test.image(i), int(labels[i]), int(preds[i]), float(probs[i, preds[i]])) for i in indices]
        for indices in select_grid_samples(labels, len(names), grid_cols)
    ]
    confidence = f"confidence at temperature {temperature:.3g}" if temperature else "raw confidence: temperature not fitted"
    prediction_grid(rows, names, plots_dir / PREDICTIONS_PNG, cols=grid_cols, title=f"test predictions ({confidence})")
    series = {"before (T = 1)": reliability_bins(softmax(run.logits), labels, ECE_BINS)}
    if temperature:
        series[f"after (T = {temperature:.3g}, fitted on val)"] = reliability_bins(probs, labels, ECE_BINS)
    reliability_diagram(series, plots_dir / RELIABILITY_PNG, title=f"reliability on the test set ({ECE_BINS} bins)")


def _model_figures(run: TestRun, cfg: EvaluateConfig, plots_dir: Path) -> None:
    """The first conv's filters, its feature maps and guided back-propagation of test image ``cfg.sample_index``."""
    model, pre, test = run.model, run.preprocessing, run.test
    image = BatchTransform(pre, augment=False)(torch.from_numpy(test.image(cfg.sample_index))[None])[0]
    shown = (image * torch.tensor(pre.std)[:, None, None] + torch.tensor(pre.mean)[:, None, None]).clamp(0, 1)
    sample_name = test.paths[cfg.sample_index]
    conv = first_conv(model)
    filter_grid(conv.weight.detach().cpu(), plots_dir / FILTERS_PNG, title=f"first conv layer: {conv.out_channels} filters")
    feature_map_grid(
        layer_activations(model, image, _first_activation(model)), plots_dir / FEATURE_MAPS_PNG,
        image=shown, title=f"first-layer activations\n{sample_name}",
    )
    target = _last_conv_layer(model)
    channels = top_channels(model, image, target, cfg.guided_backprop_neurons)
    guided_backprop_grid(
        guided_backprop(model, image, target, channels), channels, plots_dir / GUIDED_BACKPROP_PNG,
        title=f"guided backprop\nlast conv block\n{sample_name}",
    )
