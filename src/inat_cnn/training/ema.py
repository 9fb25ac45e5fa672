"""An exponential moving average of a model's weights (and BatchNorm statistics), updated every step.

Built on ``torch.optim.swa_utils.AveragedModel`` as torchvision's classification reference does.
The time constant is given in epochs (``ema_epochs``), so it means the same on 400 images and on
10,000: the per-step decay is ``exp(-1 / (ema_epochs * steps_per_epoch))``. Early on the decay is
capped at ``(1 + n) / (10 + n)`` after n updates, so the average is not dominated by the random
initial weights (timm's warm-up).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightEMA(AveragedModel):
    """``.module`` holds the averaged copy; call :meth:`update_parameters` after each optimizer step."""

    def __init__(self, model: nn.Module, ema_epochs: float, steps_per_epoch: int) -> None:
        decay = math.exp(-1.0 / (ema_epochs * max(1, steps_per_epoch)))

        def ema_avg(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
            d = torch.clamp((1 + updates) / (10 + updates), max=decay).to(averaged.dtype)
            return averaged * d + current * (1 - d)

        super().__init__(model, avg_fn=ema_avg, use_buffers=True)
        self.decay = decay
