"""A model's predictions on a batch or a prepared split: logits, softmax probabilities (optionally
mirror-averaged and temperature-scaled). The scores of those predictions are :mod:`.metrics`."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.batches import BatchLoader
from ..data.prepared import PreparedSplit
from ..data.preprocessing import BatchTransform, Preprocessing


@torch.no_grad()
def class_logits(model: nn.Module, x: torch.Tensor, *, tta: bool = False) -> torch.Tensor:
    """Float32 logits of a batch of model inputs; with ``tta``, the log of the mean of the image's and
    its mirror image's (horizontal flip, the one augmentation every model here was trained with)
    softmax probabilities: a logit whose softmax is that mean."""
    logits = model(x).float()
    if tta:
        pair = torch.stack([torch.log_softmax(logits, 1), torch.log_softmax(model(x.flip(3)).float(), 1)])
        logits = torch.logsumexp(pair, 0) - math.log(2)
    return logits


@torch.no_grad()
def class_probs(model: nn.Module, x: torch.Tensor, *, tta: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Softmax probabilities of :func:`class_logits` divided by ``temperature`` (1: the raw model;
    a checkpoint's fitted one: calibrated confidences, see :mod:`.calibration`)."""
    return torch.softmax(class_logits(model, x, tta=tta) / temperature, dim=1)


@torch.no_grad()
def predict_logits(
    model: nn.Module, split: PreparedSplit, pre: Preprocessing, *, batch_size: int, device: torch.device, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) (see :func:`class_logits`) and true labels (N,) of a prepared split, in its order.

    The logits stay on the device until the end (one copy to the host); the labels are the
    split's own (an unshuffled loader visits it in order)."""
    model.eval().to(device)
    loader = BatchLoader(split, batch_size, device, BatchTransform(pre, augment=False))
    logits = [class_logits(model, x, tta=tta) for x, _ in tqdm(loader, desc="predict", leave=False, mininterval=2.0)]
    return torch.cat(logits).cpu().numpy(), split.labels.copy()


def predict_probs(
    model: nn.Module, split: PreparedSplit, pre: Preprocessing, *, batch_size: int, device: torch.device,
    tta: bool = False, temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, C) of :func:`predict_logits` divided by ``temperature``, and the true labels (N,)."""
    logits, labels = predict_logits(model, split, pre, batch_size=batch_size, device=device, tta=tta)
    return softmax(logits, temperature), labels


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
