"""The evaluate stages' library: one checkpoint on the prepared TEST split -> predictions and metrics.

``evaluate_scratch`` and ``evaluate_finetune`` run exactly this code, so both models get the same
metrics layout; the stage then draws the figures from what it returns (:mod:`.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dvclive import Live
from torch import nn

from ..core.config import EvaluateConfig
from ..core.device import select_device
from ..core.errors import FieldError, UserError
from ..data.prepared import PreparedSplit, open_prepared
from ..data.preprocessing import Preprocessing
from ..models.build import load_model
from ..models.checkpoint import has_temperature, temperature_of
from .calibration import measure_calibration
from .metrics import classification_metrics
from .predictions import predict_logits, softmax


@dataclass
class TestRun:
    """One checkpoint's predictions on the TEST split: what the metrics and every figure are made from."""

    model: nn.Module  # on the CPU, in eval mode
    preprocessing: Preprocessing
    test: PreparedSplit
    logits: np.ndarray
    labels: np.ndarray
    temperature: float | None  # None: the checkpoint has none (not fitted), confidences are raw
    probs: np.ndarray  # softmax(logits / temperature): the calibrated confidences
    metrics: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return self.test.class_names


def _open_test(checkpoint_path: Path, prepared_dir: Path, cfg: EvaluateConfig):
    """The checkpoint's model, spec and dict, and the prepared TEST split, checked against each other."""
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


def evaluate_checkpoint(checkpoint_path: Path, prepared_dir: Path, cfg: EvaluateConfig, *, live_dir: Path,
                        device: str = "auto") -> TestRun:
    """Predict the prepared TEST split with a checkpoint (its temperature applied); the metrics, with a
    ``calibration`` block (:func:`.calibration.measure_calibration`), and the confusion data in ``live_dir``."""
    model, spec, ckpt, test = _open_test(checkpoint_path, prepared_dir, cfg)
    names = spec.class_names
    logits, labels = predict_logits(model, test, spec.preprocessing, batch_size=cfg.batch_size,
                                    device=select_device(device), tta=cfg.tta)
    model.cpu()
    temperature = temperature_of(ckpt) if has_temperature(ckpt) else None  # None: not fitted, T = 1
    probs = softmax(logits, temperature or 1.0)
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
    return TestRun(model, spec.preprocessing, test, logits, labels, temperature, probs, metrics)
