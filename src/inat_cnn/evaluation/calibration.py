"""Calibrated confidences: expected calibration error, NLL and temperature scaling (Guo et al., 2017).

A model's confidence is its top softmax probability. The expected calibration error (ECE) sorts
the images into ``ECE_BINS`` equal-width confidence bins, (0, 1/15], (1/15, 2/15], ..., and
averages |accuracy - mean confidence| over the bins, weighted by their share of the images.
Temperature scaling divides every logit by one scalar T > 0, fitted by L-BFGS on log T to minimise
the negative log-likelihood of the VALIDATION split: T > 1 softens an over-confident model, T < 1
sharpens an under-confident one; the predicted class never changes. The training stages fit T on
the val split and store it in the checkpoint (:func:`calibrate_checkpoint`); the evaluate stages
measure ECE before and after it on the test set, which decides nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import FieldError, UserError
from .predictions import softmax

ECE_BINS = 15
# T is searched in [1/20, 20]: on a tiny split the model may be right on every image, and the NLL
# then keeps falling as T -> 0 (infinitely sharp); the bound keeps the fit finite there.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin: the images it holds, their mean confidence and their accuracy (NaN when empty)."""

    edges: np.ndarray  # (bins + 1,) from 0 to 1
    counts: np.ndarray  # (bins,)
    confidence: np.ndarray  # (bins,)
    accuracy: np.ndarray  # (bins,)

    @property
    def ece(self) -> float:
        full = self.counts > 0
        weights = self.counts[full] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[full] - self.confidence[full])))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin the top-class confidences of ``probs`` (N, C) into ``bins`` equal-width bins, (lo, hi]."""
    if bins < 1:
        raise FieldError("ece_bins", bins, "is not allowed; expected an integer >= 1")
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"probabilities of shape {probs.shape} for {len(labels)} labels: expected (N, C) with N = labels >= 1")
    confidence, correct = probs.max(1), (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi]; 0 goes to the first
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, minlength=bins) / counts
        accuracy = np.bincount(index, correct, minlength=bins) / counts
    return ReliabilityBins(edges, counts.astype(np.int64), mean_conf, accuracy)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of ``probs`` (N, C) against ``labels`` (N,) with ``bins`` equal-width confidence bins."""
    return reliability_bins(probs, labels, bins).ece


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits / temperature, labels)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against ``labels``."""
    x, y = torch.as_tensor(np.asarray(logits), dtype=torch.float64), torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return float(_nll(x, y, torch.tensor(float(temperature), dtype=torch.float64)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimising the NLL of ``logits / T``: L-BFGS on log T
    from T = 1, in float64 on the CPU (deterministic)."""
    x, y = torch.as_tensor(np.asarray(logits), dtype=torch.float64), torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"logits of shape {tuple(x.shape)} for {len(y)} labels: expected (N, C) with N = labels >= 1")
    bounds = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _nll(x, y, log_t.clamp(*bounds).exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().clamp(*bounds).exp())


def usable_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float | None, str | None]:
    """:func:`fit_temperature`, or ``(None, why)`` where the data cannot choose T: on a split the model gets
    entirely right the NLL keeps falling as T -> 0 (the fit stops wherever its gradient vanishes), and a
    fit that ran into a bound of its search (a tiny split, a model right nowhere) was chosen by the bound.
    The raw confidences (T = 1) are kept then."""
    if np.all(np.asarray(logits).argmax(1) == np.asarray(labels)):  # before the fit, whose T it would discard
        why = f"every one of its {len(labels)} images is right"
    elif not MIN_TEMPERATURE * 1.01 < (temperature := fit_temperature(logits, labels)) < MAX_TEMPERATURE / 1.01:
        why = f"the fit ran into its bound, T = {temperature:.3g}, on {len(labels)} images"
    else:
        return temperature, None
    return None, f"not fitted: validation split too small / saturated ({why}); confidences are the raw softmax (T = 1)"


@dataclass(frozen=True)
class Calibration:
    """The ``calibration`` block of a details JSON: one temperature (1.0 and ``fitted`` false with the
    reason in ``note`` where none could be fitted), and ECE / NLL on one split before and after it."""

    temperature: float
    ece_bins: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    fitted: bool = True
    note: str | None = None

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        return asdict(self)

    def describe(self) -> str:
        if not self.fitted:
            return f"{self.note}; ECE {self.ece_before:.3f}, NLL {self.nll_before:.3f}"
        return (f"T = {self.temperature:.3g}: ECE {self.ece_before:.3f} -> {self.ece_after:.3f}, "
                f"NLL {self.nll_before:.3f} -> {self.nll_after:.3f}")


def measure_calibration(logits: np.ndarray, labels: np.ndarray, temperature: float | None, bins: int = ECE_BINS,
                        note: str | None = None) -> Calibration:
    """ECE and NLL of ``logits`` with T = 1 and with ``temperature`` (None: not fitted, T = 1, ``note`` says why)."""
    t = 1.0 if temperature is None else float(temperature)
    return Calibration(
        temperature=t,
        ece_bins=bins,
        ece_before=expected_calibration_error(softmax(logits), labels, bins),
        ece_after=expected_calibration_error(softmax(logits, t), labels, bins),
        nll_before=negative_log_likelihood(logits, labels),
        nll_after=negative_log_likelihood(logits, labels, t),
        fitted=temperature is not None,
        note=note,
    )


def calibrate_checkpoint(
    checkpoint_path: Path, prepared_dir: Path, *, split: str = "val", batch_size: int = 64, device: str = "auto",
) -> Calibration:
    """Fit a temperature on the prepared ``split`` (the validation split: never the test set), store it in
    the checkpoint (rewritten atomically; none stored where :func:`usable_temperature` found none) and
    return ECE / NLL on that split before and after it."""
    from ..data.prepared import open_prepared_splits
    from ..models.build import load_model
    from ..models.checkpoint import set_temperature
    from ..core.device import select_device
    from .predictions import predict_logits

    model, spec, _ = load_model(checkpoint_path)
    [data] = open_prepared_splits(prepared_dir, [split], side=spec.preprocessing.source_size)
    if data.class_names != list(spec.class_names):
        raise UserError(f"{prepared_dir / split}: classes {data.class_names} differ from {checkpoint_path}'s {spec.class_names}")
    logits, labels = predict_logits(model, data, spec.preprocessing, batch_size=batch_size, device=select_device(device))
    temperature, note = usable_temperature(logits, labels)
    set_temperature(checkpoint_path, temperature)
    return measure_calibration(logits, labels, temperature, note=note)
