"""The one training loop, used by train_scratch and finetune.

``fit`` trains with the optimizer/schedule/loss of a :class:`TrainConfig`, validates every epoch,
keeps the best-val-accuracy checkpoint (atomically), stops early after ``early_stop_patience``
epochs without improvement, and hands per-epoch rows to a logger (dvclive, see tracking.py).
Batches come from the prepared uint8 cache and are augmented on the training device
(data/batches.py, data/preprocessing.py). On CUDA it uses autocast (bf16/fp16), channels_last,
optional torch.compile and cudnn.benchmark; on CPU it runs fp32 and, with the same params and
seed, gives the same metrics run after run. Per-step values stay on the device: the host syncs
once per epoch. Under torchrun it trains with DistributedDataParallel (see distributed.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .checkpoint import ModelSpec, save_checkpoint
from .config import LoggingConfig, TrainConfig
from .data.batches import BatchLoader
from .data.prepared import PreparedSplit, open_prepared
from .data.preprocessing import BatchTransform
from .errors import ConfigError
from .files import atomic_path
from .tracking import epoch_logger


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params: train.device / finetune.device = 'cuda' but no CUDA device is available here; use auto or cpu")
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


class Runner:
    """Runs forward (+ backward) on device batches under the right precision, wrapped in DDP when distributed."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, ctx: distributed.Context = distributed.Context()) -> None:
        self.device = device
        self.ctx = ctx
        cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.model = model.to(device, memory_format=self.memory_format)
        compiled = cfg.compile and cuda
        self.eval_forward = torch.compile(self.model) if compiled else self.model
        self.train_forward = self.eval_forward
        if ctx.enabled:  # validation stays local (no collectives per step); training averages gradients
            ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if cuda else None)
            self.train_forward = torch.compile(ddp) if compiled else ddp
        if cuda:
            torch.backends.cudnn.benchmark = True

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def epoch(self, loader, loss_fn, desc: str, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """One pass over ``loader`` (device batches); trains when ``optimizer`` is given.

        Returns loss, acc and images summed over every rank, and this rank's seconds.
        """
        training = optimizer is not None
        self.model.train(training)
        forward = self.train_forward if training else self.eval_forward
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        start = time.perf_counter()
        with torch.set_grad_enabled(training):
            for x, y in tqdm(loader, desc=desc, leave=False, mininterval=2.0, dynamic_ncols=True, disable=not self.ctx.is_main):
                x = x.contiguous(memory_format=self.memory_format)
                with self.autocast():
                    logits = forward(x)
                    loss = loss_fn(logits.float(), y)
                if training:
                    optimizer.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(optimizer)
                    self.scaler.update()
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.argmax(1) == y).sum()
                seen += y.shape[0]
        totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=self.device, dtype=torch.float64)])
        loss_sum, correct, seen = distributed.sum_across(totals, self.ctx).tolist()  # the epoch's one host sync
        seconds = time.perf_counter() - start
        return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "images": int(seen), "seconds": seconds}


@dataclass
class _Progress:
    """Everything the loop carries from one epoch to the next (saved for resume)."""

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_acc: float = -math.inf
    best_loss: float = math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    train_images: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class ResumeState:
    """The resume file: model, optimizer, scheduler, grad scaler and loop progress after each epoch.

    It lives outside DVC's outs (DVC deletes a stage's outs before running it), is written to a
    temp file and renamed, carries a fingerprint of everything the run depends on (a file from a
    differently-configured run is ignored), and is deleted once training finishes.
    """

    def __init__(self, path: Path | None, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file is never trusted
            print(f"ignoring unreadable resume file {self.path} ({type(exc).__name__})", flush=True)
            return None
        if saved.get("fingerprint") != self.fingerprint:
            print(f"ignoring {self.path}: it belongs to a run with other params, code inputs or data", flush=True)
            return None
        return saved

    def save(self, progress: _Progress, best_state: dict[str, torch.Tensor] | None, **states: Any) -> None:
        if self.path is None:
            return
        payload = {"fingerprint": self.fingerprint, "progress": progress.__dict__, "best_state": best_state, **states}
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def fit(
    model: nn.Module,
    spec: ModelSpec,
    train_split: PreparedSplit,
    val_split: PreparedSplit,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_path: str | Path,
    log_epoch: Callable[[dict[str, float]], None] | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    resume: ResumeState | None = None,
) -> FitResult:
    """Train ``model``; the best-val-accuracy weights end up in ``checkpoint_path`` and in ``model``.

    Every epoch reseeds the RNGs from ``(seed, epoch)`` (weights' dropout, batch order,
    augmentation), so a run resumed from ``resume`` after epoch k ends exactly like an
    uninterrupted one. Under torchrun every rank calls this; rank 0 alone writes files.
    """
    spec.preprocessing.check_source(f"the {spec.arch} model")  # before any device or process-group work
    ctx, device = distributed.start(select_device(cfg.device))
    runner = Runner(model, cfg, device, ctx)
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = make_optimizer(cfg, param_groups)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs) if cfg.schedule == "cosine" else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    train_loader = BatchLoader(train_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=cfg.augment),
                               shuffle=True, pad=True, **shard)
    val_loader = BatchLoader(val_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=False), **shard)
    if not ctx.is_main:
        log_epoch = None
    resume = resume or ResumeState(None, "")
    resume_writer = resume if ctx.is_main else ResumeState(None, "")
    progress = _Progress()
    best_state: dict[str, torch.Tensor] | None = None
    saved = resume.load()
    if saved is not None:
        progress = _Progress(**saved["progress"])
        best_state = saved["best_state"]
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        runner.scaler.load_state_dict(saved["scaler"])
        print(f"resuming from {resume.path} after epoch {progress.epoch}/{cfg.epochs}", flush=True)
        for row in progress.history:  # DVC removed the curves with the stage's outs: write them again
            if log_epoch is not None:
                log_epoch(row)
        if best_state is not None and ctx.is_main:  # ... and the best checkpoint
            _save_best(checkpoint_path, best_state, spec, progress)

    while progress.epoch < cfg.epochs and not progress.stopped_early:
        epoch = progress.epoch + 1
        torch.manual_seed(seed * 1000 + epoch + 7919 * ctx.rank)
        train_loader.set_epoch(seed * 1000 + epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = runner.epoch(train_loader, loss_fn, f"epoch {epoch}/{cfg.epochs} train", optimizer)
        distributed.broadcast_buffers(model, ctx)
        va = runner.epoch(val_loader, loss_fn, f"epoch {epoch}/{cfg.epochs} val")
        if scheduler is not None:
            scheduler.step()
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
        progress.epoch = epoch
        progress.history.append(row)
        progress.train_images += tr["images"]
        progress.train_seconds += tr["seconds"]
        if log_epoch is not None:
            log_epoch(row)
        improved = va["acc"] > progress.best_acc
        if ctx.is_main:
            print(
                f"epoch {epoch}/{cfg.epochs}: train loss {tr['loss']:.4f} acc {tr['acc']:.3f} | "
                f"val loss {va['loss']:.4f} acc {va['acc']:.3f} | {row['images_per_s']:.1f} img/s"
                + (" *" if improved else ""),
                flush=True,
            )
        if improved:
            progress.best_epoch, progress.best_acc, progress.best_loss = epoch, va["acc"], va["loss"]
            progress.best_metrics = {"val_acc": va["acc"], "val_loss": va["loss"], "train_acc": tr["acc"], "train_loss": tr["loss"]}
            progress.bad_epochs = 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if ctx.is_main:
                _save_best(checkpoint_path, best_state, spec, progress)
        else:
            progress.bad_epochs += 1
            if progress.bad_epochs >= cfg.early_stop_patience:
                progress.stopped_early = True
                if ctx.is_main:
                    print(f"early stop: no val accuracy gain for {progress.bad_epochs} epochs "
                          f"(best {progress.best_acc:.3f} at epoch {progress.best_epoch})")
        resume_writer.save(
            progress, best_state, model=model.state_dict(), optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None, scaler=runner.scaler.state_dict(),
        )
    resume_writer.clear()
    distributed.stop(ctx)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        best_epoch=progress.best_epoch,
        best_val_acc=progress.best_acc,
        best_val_loss=progress.best_loss,
        epochs_run=len(progress.history),
        stopped_early=progress.stopped_early,
        train_seconds=sum(row["epoch_seconds"] for row in progress.history),
        images_per_s=progress.train_images / progress.train_seconds if progress.train_seconds else 0.0,
        history=progress.history,
    )


def _save_best(path: str | Path, best_state: dict[str, torch.Tensor], spec: ModelSpec, progress: _Progress) -> None:
    """Write the best weights so far as the stage's checkpoint (what evaluate and predict load)."""
    save_checkpoint(path, best_state, spec, epoch=progress.best_epoch, metrics=progress.best_metrics)


def run_fingerprint(spec: ModelSpec, cfg: TrainConfig, seed: int, prepared_dir: Path) -> str:
    """What a resumed run must share with the interrupted one: model, params, seed and prepared data."""
    h = hashlib.sha256()
    h.update(json.dumps(
        {"arch": spec.arch, "model": spec.model_config, "classes": spec.class_names,
         "preprocessing": spec.preprocessing.to_dict(), "train": cfg.__dict__, "seed": seed},
        sort_keys=True, default=list,
    ).encode())
    for name in ("train", "val"):
        h.update((prepared_dir / name / "meta.json").read_bytes())
        h.update((prepared_dir / name / "items.csv").read_bytes())
        st = (prepared_dir / name / "images.npy").stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def train_on_split(
    model: nn.Module,
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    seed: int,
    prepared_dir: Path,
    checkpoint_path: Path,
    live_dir: Path,
    param_groups: list[dict[str, Any]] | None = None,
    logging: LoggingConfig = LoggingConfig(),
    run_config: dict[str, Any] | None = None,
    resume_path: Path | None = None,
) -> FitResult:
    """Train on the prepared train split, validate on the val split (``prepared_dir``, see data/prepared.py).

    Curves go to dvclive in ``live_dir`` (and to W&B when ``logging.wandb``; ``run_config`` is
    the params recorded with that run). With ``resume_path``, progress is saved there after every
    epoch and a killed run started again continues from its last complete epoch.
    """
    train_split = open_prepared(prepared_dir, "train")
    val_split = open_prepared(prepared_dir, "val")
    if train_split.class_names != list(spec.class_names):
        raise ConfigError(f"{prepared_dir}: classes {train_split.class_names} differ from the model's {spec.class_names}")
    resume = ResumeState(resume_path, run_fingerprint(spec, cfg, seed, prepared_dir) if resume_path else "")
    # under torchrun, rank 0 alone records curves (the other ranks' are the same all-reduced rows)
    logger = epoch_logger(live_dir, logging, live_dir.name, run_config or {}) if distributed.is_main_process() else contextlib.nullcontext()
    with logger as log_epoch:
        return fit(
            model, spec, train_split, val_split, cfg, seed=seed, checkpoint_path=checkpoint_path,
            log_epoch=log_epoch, param_groups=param_groups, resume=resume,
        )
