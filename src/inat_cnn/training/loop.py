"""The one training loop, used by train_scratch and finetune.

``fit`` trains with the optimizer/schedule/loss of a :class:`TrainConfig`, validates every epoch,
keeps the best-val-accuracy checkpoint (atomically), stops early after ``early_stop_patience``
epochs without improvement, and hands per-epoch rows to a logger (dvclive, see tracking.py).
Batches come from the prepared uint8 cache and are augmented on the training device
(data/batches.py, data/preprocessing.py). On CUDA it uses autocast (bf16/fp16), channels_last,
optional torch.compile and cudnn.benchmark; on CPU it runs fp32 and, with the same params and
seed, gives the same metrics and byte-identical checkpoints run after run. Per-step values stay on
the device: the host syncs once per epoch. Under torchrun it trains with DistributedDataParallel
(see distributed.py).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from ..core.config import LoggingConfig, TrainConfig
from ..core.errors import UserError
from ..data.batches import BatchLoader
from ..data.prepared import PreparedSplit, open_prepared_splits
from ..data.preprocessing import BatchTransform
from ..models.checkpoint import ModelSpec, save_checkpoint
from . import distributed
from .device import autocast_dtype, select_device
from .optim import make_optimizer, make_scheduler
from .resume import Progress, ResumeState, run_fingerprint
from .tracking import EpochLogger, epoch_logger

@dataclass
class FitResult:
    """What a training run achieved (:meth:`summary`, the same on every re-run) and how fast (:meth:`timing`)."""

    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    pruned_after_epoch: int | None = None

    def summary(self) -> dict[str, Any]:
        """Results only: a re-run with the same params, seed and machine writes the same bytes."""
        return {k: v for k, v in self.__dict__.items() if k != "history"}

    def timing(self) -> dict[str, Any]:
        """Wall time and throughput: they change from run to run, so they live in a file of their own."""
        seconds = [row["epoch_seconds"] for row in self.history]
        train_seconds = sum(row["train_seconds"] for row in self.history)
        images = sum(row["train_images"] for row in self.history)
        return {
            "train_seconds": round(sum(seconds), 3),
            "images_per_s": round(images / train_seconds, 2) if train_seconds else 0.0,
            "epoch_seconds": [round(s, 3) for s in seconds],
        }


class Runner:
    """Runs forward (+ backward) on device batches under the right precision, wrapped in DDP when distributed."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, ctx: distributed.Context = distributed.Context()) -> None:
        self.device = device
        self.ctx = ctx
        cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.amp_dtype, self.precision = autocast_dtype(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.model = model.to(device, memory_format=self.memory_format)
        compiled = cfg.compile
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


def fit(
    model: nn.Module,
    spec: ModelSpec,
    train_split: PreparedSplit,
    val_split: PreparedSplit,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_path: str | Path,
    log_epoch: EpochLogger | None = None,
    param_groups: list[dict[str, Any]] | None = None,
    resume: ResumeState | None = None,
    epoch_hook: Callable[[dict[str, float]], bool] | None = None,
) -> FitResult:
    """Train ``model``; the best-val-accuracy weights end up in ``checkpoint_path`` and in ``model``.

    Every epoch reseeds the RNGs from ``(seed, epoch)`` (dropout, batch order, augmentation), so a
    run resumed from ``resume`` after epoch k ends exactly like an uninterrupted one. Under
    torchrun every rank calls this; rank 0 alone writes files.
    """
    spec.preprocessing.check_source(f"the {spec.arch} model")  # before any device or process-group work
    ctx, device = distributed.start(select_device(cfg.device))
    runner = Runner(model, cfg, device, ctx)
    if ctx.is_main:
        print(f"training on {device}: {runner.precision}, {'channels_last' if cfg.channels_last else 'NCHW'}", flush=True)
    optimizer = make_optimizer(cfg, param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}])
    scheduler = make_scheduler(cfg, optimizer)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    train_loader = BatchLoader(train_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=cfg.augment),
                               shuffle=True, pad=True, **shard)
    val_loader = BatchLoader(val_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=False), **shard)
    log_epoch = log_epoch if ctx.is_main else None
    resume = resume or ResumeState(None)
    writer = resume if ctx.is_main else ResumeState(None)
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": runner.scaler}
    progress, best_state = _restore(resume, states, checkpoint_path, spec, log_epoch, ctx.is_main)
    pruned_after = None
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
        improved = progress.record(epoch, tr, va, lr, cfg.early_stop_patience)
        if ctx.is_main:
            _print_epoch(progress, cfg.epochs, improved)
        if log_epoch is not None:
            log_epoch(progress.history[-1])
        if epoch_hook is not None and ctx.is_main and epoch_hook(progress.history[-1]):
            pruned_after = epoch
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if ctx.is_main:
                save_checkpoint(checkpoint_path, best_state, spec, epoch=progress.best_epoch, metrics=progress.best_metrics)
        writer.save(progress, best_state, **{k: None if s is None else s.state_dict() for k, s in states.items()})
        if pruned_after is not None:
            print(f"pruned after epoch {epoch}", flush=True)
            break
    writer.clear()
    distributed.stop(ctx)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(progress.best_epoch, progress.best_acc, progress.best_loss, len(progress.history),
                     progress.stopped_early, progress.history, pruned_after)


def _restore(resume: ResumeState, states: dict[str, Any], checkpoint_path: str | Path, spec: ModelSpec,
             log_epoch: EpochLogger | None, is_main: bool) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """The progress and best weights of an interrupted run (loaded into ``states``), or a fresh start."""
    saved = resume.load()
    if saved is None:
        return Progress(), None
    progress = Progress(**saved["progress"])
    for key, state in states.items():
        if state is not None:
            state.load_state_dict(saved[key])
    print(f"resuming from {resume.path} after epoch {progress.epoch}", flush=True)
    for row in progress.history:  # DVC removed the curves with the stage's outs: write them again
        if log_epoch is not None:
            log_epoch(row)
    best_state = saved["best_state"]
    if best_state is not None and is_main:  # ... and the best checkpoint
        save_checkpoint(checkpoint_path, best_state, spec, epoch=progress.best_epoch, metrics=progress.best_metrics)
    return progress, best_state


def _print_epoch(progress: Progress, epochs: int, improved: bool) -> None:
    row = progress.history[-1]
    print(
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} | {row['images_per_s']:.1f} img/s"
        + (" *" if improved else ""),
        flush=True,
    )
    if progress.stopped_early:
        print(f"early stop: no val accuracy gain for {progress.bad_epochs} epochs "
              f"(best {progress.best_acc:.3f} at epoch {progress.best_epoch})")


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
    epoch_hook: Callable[[dict[str, float]], bool] | None = None,
) -> FitResult:
    """Train on the prepared train split, validate on the val split (``prepared_dir``, see data/prepared.py).

    Curves go to dvclive in ``live_dir`` (and to W&B when ``logging.wandb``; ``run_config`` is
    the params recorded with that run). With ``resume_path``, progress is saved there after every
    epoch and a killed run started again continues from its last complete epoch.
    """
    train_split, val_split = open_prepared_splits(prepared_dir, ("train", "val"), side=spec.preprocessing.source_size)
    if train_split.class_names != list(spec.class_names):
        raise UserError(f"{prepared_dir}: classes {train_split.class_names} differ from the model's {spec.class_names}")
    resume = ResumeState(resume_path, run_fingerprint(spec, cfg, seed, prepared_dir) if resume_path else "")
    # under torchrun, rank 0 alone records curves (the other ranks' are the same all-reduced rows)
    logger = epoch_logger(live_dir, logging, live_dir.name, run_config or {}) if distributed.is_main_process() else contextlib.nullcontext()
    with logger as log_epoch:
        return fit(
            model, spec, train_split, val_split, cfg, seed=seed, checkpoint_path=checkpoint_path,
            log_epoch=log_epoch, param_groups=param_groups, resume=resume, epoch_hook=epoch_hook,
        )
