"""The learning-rate range test (Smith 2015, fastai's ``lr_find``) behind ``inat-cnn lr-find``.

Train a fresh model for ``steps`` steps on the prepared TRAIN split while the learning rate grows
exponentially from ``start`` to ``end`` (every parameter group keeps its ratio to the highest
one), record the loss smoothed with an exponential average (bias-corrected), and stop once it
passes 4x its minimum. The suggestion is the rate at the minimum of the smoothed loss divided
by 10, where the loss still falls steeply; the steps run through the same :class:`Runner` as
training does (precision, memory format). Nothing is read from the validation or test splits.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..core.config import TrainConfig
from ..core.errors import FieldError
from ..data.batches import BatchLoader
from ..data.prepared import PreparedSplit
from ..data.preprocessing import BatchTransform
from ..models.checkpoint import ModelSpec
from ..core.device import select_device
from .loop import Runner
from .optim import make_optimizer

SMOOTHING = 0.9  # the weight of the running average per step
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


@dataclass(frozen=True)
class LRFinding:
    lrs: list[float]  # the highest group's rate at each step
    losses: list[float]  # the smoothed training loss at each step
    suggestion: float

    def to_dict(self) -> dict[str, Any]:
        return {"suggested_lr": self.suggestion, "steps": len(self.lrs), "lrs": self.lrs, "smoothed_losses": self.losses}


def lr_range_test(model: nn.Module, spec: ModelSpec, train_split: PreparedSplit, cfg: TrainConfig, *, seed: int,
                  param_groups: list[dict[str, Any]] | None = None, start: float = 1e-7, end: float = 1.0,
                  steps: int = 100) -> LRFinding:
    """Run the range test on ``model`` (its weights change: pass a fresh one)."""
    if not 0 < start < end:
        raise FieldError("start", start, f"is not allowed; expected 0 < start < end ({end})")
    if steps < 10:
        raise FieldError("steps", steps, "is not allowed; expected an integer >= 10")
    device = select_device(cfg.device)
    runner = Runner(model, cfg.model_copy(update={"compile": False}), device)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(cfg.model_copy(update={"lr": end}), groups)
    top = max(group.get("lr", end) for group in optimizer.param_groups)
    growth = (end / start) ** (1 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: start / top * growth**step)
    loader = BatchLoader(train_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=cfg.augment), shuffle=True)
    batches = _endless(loader, seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lrs: list[float] = []
    losses: list[float] = []
    average = 0.0
    for step in range(steps):
        lr = max(group["lr"] for group in optimizer.param_groups)
        loss = runner.train_epoch(itertools.islice(batches, 1), loss_fn, optimizer, scheduler, desc="lr-find")["loss"]
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        lrs.append(lr)
        losses.append(average / (1 - SMOOTHING ** (step + 1)))
        if step >= 5 and losses[-1] > DIVERGED * min(losses):
            break
    best = min(range(len(losses)), key=losses.__getitem__)
    return LRFinding(lrs, losses, lrs[best] / 10)


def _endless(loader: BatchLoader, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for epoch in itertools.count(1):
        loader.set_epoch(seed * 1000 + epoch)
        yield from loader
