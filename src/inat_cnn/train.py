"""The one training loop, used by train_scratch and finetune.

``fit`` trains with the optimizer/schedule/loss of a :class:`TrainConfig`, validates every epoch,
keeps the best-val-accuracy checkpoint (atomically), stops early after ``early_stop_patience``
epochs without improvement, and hands per-epoch rows to a logger (dvclive, see tracking.py).
On CUDA it uses autocast (bf16/fp16), channels_last, pinned memory and optional torch.compile;
on CPU it runs fp32 and,
with the same params and seed, gives the same metrics run after run. Per-step values stay on the
device: the host syncs once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from .checkpoint import ModelSpec, save_checkpoint
from .config import LoggingConfig, TrainConfig
from .data.loaders import make_loader
from .errors import ConfigError
from .tracking import epoch_logger


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params: device = 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(cfg: TrainConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class FitResult:
    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    images_per_s: float  # training images per second over all epochs (train phase only)
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


class _Runner:
    """Moves batches to the device and runs forward (+ backward) under the right precision."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        self.device = device
        cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.model = model.to(device, memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if cfg.compile and cuda else self.model
        if cuda:
            torch.backends.cudnn.benchmark = True

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def epoch(self, loader, loss_fn, desc: str, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """One pass over ``loader``; trains when ``optimizer`` is given. Returns loss, acc, images, seconds."""
        training = optimizer is not None
        self.model.train(training)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        with torch.set_grad_enabled(training):
            for x, y in tqdm(loader, desc=desc, leave=False, mininterval=2.0, dynamic_ncols=True):
                x, y = self.batch(x, y)
                with self.autocast():
                    logits = self.forward(x)
                    loss = loss_fn(logits.float(), y)
                if training:
                    optimizer.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(optimizer)
                    self.scaler.update()
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.argmax(1) == y).sum()
                seen += y.shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {
            "loss": loss_sum.item() / max(seen, 1),
            "acc": correct.item() / max(seen, 1),
            "images": seen,
            "seconds": seconds,
        }


def fit(
    model: nn.Module,
    spec: ModelSpec,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_path: str | Path,
    log_epoch: Callable[[dict[str, float]], None] | None = None,
    param_groups: list[dict[str, Any]] | None = None,
) -> FitResult:
    """Train ``model``; the best-val-accuracy weights end up in ``checkpoint_path`` and in ``model``."""
    seed_everything(seed)
    device = select_device(cfg.device)
    runner = _Runner(model, cfg, device)
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(cfg, param_groups)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs) if cfg.schedule == "cosine" else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, seed=seed, pin_memory=pin)
    val_loader = make_loader(val_ds, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, seed=seed, pin_memory=pin)

    best = {"epoch": 0, "acc": -math.inf, "loss": math.inf}
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    bad_epochs = 0
    train_images = 0
    train_seconds = 0.0
    wall_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        tr = runner.epoch(train_loader, loss_fn, f"epoch {epoch}/{cfg.epochs} train", optimizer)
        va = runner.epoch(val_loader, loss_fn, f"epoch {epoch}/{cfg.epochs} val")
        if scheduler is not None:
            scheduler.step()
        train_images += tr["images"]
        train_seconds += tr["seconds"]
        row = {
            "epoch": epoch,
            "train_loss": tr["loss"],
            "train_acc": tr["acc"],
            "val_loss": va["loss"],
            "val_acc": va["acc"],
            "lr": lr,
            "epoch_seconds": tr["seconds"] + va["seconds"],
            "images_per_s": tr["images"] / tr["seconds"],
        }
        history.append(row)
        if log_epoch is not None:
            log_epoch(row)
        improved = va["acc"] > best["acc"]
        print(
            f"epoch {epoch}/{cfg.epochs}: train loss {tr['loss']:.4f} acc {tr['acc']:.3f} | "
            f"val loss {va['loss']:.4f} acc {va['acc']:.3f} | {row['images_per_s']:.1f} img/s"
            + (" *" if improved else ""),
            flush=True,
        )
        if improved:
            best = {"epoch": epoch, "acc": va["acc"], "loss": va["loss"]}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
            metrics = {"val_acc": va["acc"], "val_loss": va["loss"], "train_acc": tr["acc"], "train_loss": tr["loss"]}
            save_checkpoint(checkpoint_path, model, spec, epoch=epoch, metrics=metrics, optimizer=optimizer, scheduler=scheduler)
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.early_stop_patience:
                print(f"early stop: no val accuracy gain for {bad_epochs} epochs (best {best['acc']:.3f} at epoch {best['epoch']})")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        best_epoch=best["epoch"],
        best_val_acc=best["acc"],
        best_val_loss=best["loss"],
        epochs_run=len(history),
        stopped_early=len(history) < cfg.epochs,
        train_seconds=time.perf_counter() - wall_start,
        images_per_s=train_images / train_seconds if train_seconds else 0.0,
        history=history,
    )


def train_on_split(
    model: nn.Module,
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    seed: int,
    split_dir: Path,
    images_dir: Path,
    checkpoint_path: Path,
    live_dir: Path,
    param_groups: list[dict[str, Any]] | None = None,
    logging: LoggingConfig = LoggingConfig(),
    run_config: dict[str, Any] | None = None,
) -> FitResult:
    """Train on ``split_dir``/train.csv, validate on val.csv (images under ``images_dir``).

    Curves go to dvclive in ``live_dir`` (and to W&B when ``logging.wandb``; ``run_config`` is
    the params recorded with that run).
    """
    from .data.loaders import ImageListDataset, eval_transform, read_split_csv, train_transform

    train_rows = read_split_csv(split_dir / "train.csv")
    val_rows = read_split_csv(split_dir / "val.csv")
    if train_rows.class_names() != list(spec.class_names):
        raise ConfigError(f"{train_rows.path}: classes {train_rows.class_names()} differ from the model's {spec.class_names}")
    train_ds = ImageListDataset(images_dir, train_rows.items, train_transform(spec.preprocessing, cfg.augment))
    val_ds = ImageListDataset(images_dir, val_rows.items, eval_transform(spec.preprocessing))
    with epoch_logger(live_dir, logging, live_dir.name, run_config or {}) as log_epoch:
        return fit(
            model, spec, train_ds, val_ds, cfg, seed=seed, checkpoint_path=checkpoint_path,
            log_epoch=log_epoch, param_groups=param_groups,
        )
