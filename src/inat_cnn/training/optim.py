"""Name-keyed factories for the optimizer and the learning-rate schedule.

Each table maps the name a config gives (``adamw``, ``cosine``) to a builder; an unknown name is a
:class:`~inat_cnn.core.errors.FieldError` naming the field and every known name.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..core.config import TrainConfig
from ..core.errors import FieldError

Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler

OPTIMIZERS: dict[str, Callable[[TrainConfig, Iterable[Any]], Optimizer]] = {
    "adam": lambda cfg, params: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adamw": lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda cfg, params: torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
    ),
}

SCHEDULES: dict[str, Callable[[Optimizer, int], Scheduler | None]] = {
    "cosine": lambda optimizer, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs),
    "none": lambda optimizer, epochs: None,
}


def _lookup(table: dict[str, Any], field: str, name: str) -> Any:
    if name not in table:
        raise FieldError(field, name, f"is not allowed; expected one of {', '.join(table)}")
    return table[name]


def make_optimizer(cfg: TrainConfig, params: Iterable[Any]) -> Optimizer:
    """``cfg.optimizer`` over ``params`` (tensors or param-group dicts) with cfg's lr, weight decay, momentum."""
    return _lookup(OPTIMIZERS, "optimizer", cfg.optimizer)(cfg, params)


def make_scheduler(cfg: TrainConfig, optimizer: Optimizer) -> Scheduler | None:
    """``cfg.schedule`` stepped once per epoch over ``cfg.epochs`` (None for a constant rate)."""
    return _lookup(SCHEDULES, "schedule", cfg.schedule)(optimizer, cfg.epochs)
