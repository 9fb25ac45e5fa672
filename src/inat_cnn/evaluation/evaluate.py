"""The evaluate stages' library: one checkpoint on the prepared TEST split -> metrics and figures.

``evaluate_scratch`` and ``evaluate_finetune`` run exactly this code, so both models get the same
metrics layout and the same figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.config import EvaluateConfig
from ..core.errors import FieldError, UserError
from ..data.preprocessing import BatchTransform
from .calibration import ECE_BINS, measure_calibration, reliability_bins
from .metrics import classification_metrics, confusion, predict_logits, softmax


def _last_conv_layer(model: nn.Module) -> nn.Module:
    """The layer whose channels guided backprop explains: the scratch CNN's last block, else the last Conv2d."""
    if hasattr(model, "last_conv_block"):
        return model.last_conv_block()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


def _first_activation(model: nn.Module) -> nn.Module:
    from ..models.activations import is_activation

    return next(m for m in model.modules() if is_activation(m))


def _open_test(checkpoint_path: Path, prepared_dir: Path, cfg: EvaluateConfig):
    """The checkpoint's model, spec and dict, and the prepared TEST split, checked against each other."""
    from ..data.prepared import open_prepared
    from ..models.build import load_model

    model, spec, ckpt = load_model(checkpoint_path)
    test = open_prepared(prepared_dir, "test")
    if test.class_names != list(spec.class_names):
        raise UserError(f"{prepared_dir}: classes {test.class_names} differ from {checkpoint_path}'s {spec.class_names}")
    if test.side != spec.preprocessing.source_size:
        raise UserError(
            f"{prepared_dir / 'test'}: its squares are {test.side} px but {checkpoint_path} was trained on "
            f"{spec.preprocessing.source_size} px squares; rebuild the cache and the model together (dvc repro)"
        )
    if cfg.sample_index >= len(test):
        raise FieldError("sample_index", cfg.sample_index, f"is not allowed; the test set has {len(test)} images")
    return model, spec, ckpt, test


def evaluate_checkpoint(
    checkpoint_path: Path,
    prepared_dir: Path,
    cfg: EvaluateConfig,
    *,
    plots_dir: Path,
    live_dir: Path,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint on the prepared TEST split; write the confusion plot data and every figure.

    Figures in ``plots_dir``: confusion_matrix.png, predictions_grid.png (one row per class,
    ``cfg.grid_cols`` images each), filters.png (first conv), feature_maps.png (first activation,
    test image ``cfg.sample_index``), guided_backprop.png (``cfg.guided_backprop_neurons`` channels
    of the last conv block), reliability.png (ECE bins before and after the checkpoint's temperature).
    Returns the metrics dict, with a ``calibration`` block (see :func:`.calibration.measure_calibration`);
    the grid's confidences are calibrated ones.
    """
    from dvclive import Live

    from ..models.checkpoint import has_temperature, temperature_of
    from ..core.device import select_device

    model, spec, ckpt, test = _open_test(checkpoint_path, prepared_dir, cfg)
    names = spec.class_names
    logits, labels = predict_logits(model, test, spec.preprocessing, batch_size=cfg.batch_size,
                                    device=select_device(device), tta=cfg.tta)
    model.cpu()
    temperature = temperature_of(ckpt) if has_temperature(ckpt) else None  # None: not fitted, T = 1
    probs = softmax(logits, temperature or 1.0)  # calibrated confidences
    preds = probs.argmax(1)
    metrics = classification_metrics(labels, preds, names)
    metrics["checkpoint_epoch"] = ckpt.get("epoch")
    metrics["tta"] = cfg.tta
    metrics["calibration"] = measure_calibration(
        logits, labels, temperature,
        note=None if temperature else "not fitted: no temperature in the checkpoint (the training stage's details say why)",
    ).to_dict()
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        live.log_sklearn_plot(
            "confusion_matrix", [names[i] for i in labels], [names[i] for i in preds], name="confusion_matrix.json"
        )
    plots_dir.mkdir(parents=True, exist_ok=True)
    _prediction_figures(test, names, logits, labels, temperature, cfg.grid_cols, plots_dir)
    _model_figures(model, spec.preprocessing, test, cfg, plots_dir)
    return metrics


def _prediction_figures(test, names: list[str], logits: np.ndarray, labels: np.ndarray, temperature: float | None,
                        grid_cols: int, plots_dir: Path) -> None:
    """confusion_matrix.png, predictions_grid.png and reliability.png (the after panel only where T was fitted)."""
    from ..viz.calibration import reliability_diagram
    from ..viz.predictions import Prediction, confusion_matrix_png, prediction_grid, select_grid_samples

    probs = softmax(logits, temperature or 1.0)
    preds = probs.argmax(1)
    confusion_matrix_png(confusion(labels, preds, len(names)), names, plots_dir / "confusion_matrix.png",
                         title="test confusion matrix")
    rows = [
        [Prediction(test.image(i), int(labels[i]), int(preds[i]), float(probs[i, preds[i]])) for i in indices]
        for indices in select_grid_samples(labels, len(names), grid_cols)
    ]
    confidence = f"confidence at temperature {temperature:.3g}" if temperature else "raw confidence: temperature not fitted"
    prediction_grid(rows, names, plots_dir / "predictions_grid.png", cols=grid_cols, title=f"test predictions ({confidence})")
    series = {"before (T = 1)": reliability_bins(softmax(logits), labels, ECE_BINS)}
    if temperature:
        series[f"after (T = {temperature:.3g}, fitted on val)"] = reliability_bins(probs, labels, ECE_BINS)
    reliability_diagram(series, plots_dir / "reliability.png", title=f"reliability on the test set ({ECE_BINS} bins)")


def _model_figures(model: nn.Module, pre, test, cfg: EvaluateConfig, plots_dir: Path) -> None:
    """filters.png, feature_maps.png and guided_backprop.png of test image ``cfg.sample_index``."""
    from ..viz.filters import feature_map_grid, filter_grid
    from ..viz.guided_backprop import guided_backprop, guided_backprop_grid, top_channels
    from ..viz.probe import first_conv, layer_activations

    image = BatchTransform(pre, augment=False)(test.image(cfg.sample_index)[None])[0]
    shown = (image * torch.tensor(pre.std)[:, None, None] + torch.tensor(pre.mean)[:, None, None]).clamp(0, 1)
    sample_name = test.paths[cfg.sample_index]
    conv = first_conv(model)
    filter_grid(conv.weight.detach().cpu(), plots_dir / "filters.png", title=f"first conv layer: {conv.out_channels} filters")
    feature_map_grid(
        layer_activations(model, image, _first_activation(model)), plots_dir / "feature_maps.png",
        image=shown, title=f"first-layer activations\n{sample_name}",
    )
    target = _last_conv_layer(model)
    channels = top_channels(model, image, target, cfg.guided_backprop_neurons)
    guided_backprop_grid(
        guided_backprop(model, image, target, channels), channels, plots_dir / "guided_backprop.png",
        title=f"guided backprop\nlast conv block\n{sample_name}",
    )
