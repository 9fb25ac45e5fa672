"""Name-keyed factories for the optimizer and the learning-rate schedule.

Each table maps the name a config gives (``adamw``, ``cosine``) to a builder; the names themselves are
listed once, as core/config.py's ``OptimizerName`` and ``ScheduleName`` (tests/test_config.py checks the
tables follow them). An unknown name is a :class:`~inat_cnn.core.errors.FieldError` naming the field and
every known name.

The schedule is stepped after every batch: a linear warm-up over ``warmup_epochs`` epochs, then
the named decay over the remaining steps. A parameter group with ``start_epoch`` k (fine-tuning's
backbone, see models/pretrained/freezing.py) stays at lr 0 for k epochs and then runs the same
warm-up and decay over what is left.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from ..core.config import OptimizerName, ScheduleName, TrainConfig
from ..core.errors import FieldError

Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler

OPTIMIZERS: dict[OptimizerName, Callable[[TrainConfig, Iterable[Any]], Optimizer]] = {
    "adam": lambda cfg, params: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adamw": lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda cfg, params: torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
    ),
}

SCHEDULES: dict[ScheduleName, Callable[[float], float]] = {  # progress in [0, 1] after the warm-up -> lr factor
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "none": lambda progress: 1.0,
}


def _lookup(table: dict[str, Any], field: str, name: str) -> Any:
    if name not in table:
        raise FieldError(field, name, f"is not allowed; expected one of {', '.join(table)}")
    return table[name]


def make_optimizer(cfg: TrainConfig, params: Iterable[Any]) -> Optimizer:
    """``cfg.optimizer`` over ``params`` (tensors or param-group dicts) with cfg's lr, weight decay, momentum."""
    return _lookup(OPTIMIZERS, "optimizer", cfg.optimizer)(cfg, params)


def lr_factor(step: int, *, start: int, warmup: int, total: int, decay: Callable[[float], float]) -> float:
    """The lr multiplier at optimizer step ``step`` of ``total``, for a group that starts at step ``start``."""
    step -= start
    if step < 0:
        return 0.0
    if step < warmup:
        return (step + 1) / warmup
    return decay(min(1.0, (step - warmup) / max(1, total - start - warmup)))


def make_scheduler(cfg: TrainConfig, optimizer: Optimizer, steps_per_epoch: int) -> Scheduler:
    """Warm-up, then ``cfg.schedule`` over ``cfg.epochs`` epochs of ``steps_per_epoch`` steps, per group."""
    decay = _lookup(SCHEDULES, "schedule", cfg.schedule)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    factors = [
        lambda step, start=group.get("start_epoch", 0) * steps_per_epoch: lr_factor(step, start=start, warmup=warmup, total=total, decay=decay)
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
