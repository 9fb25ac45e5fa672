"""The one training loop, used by train_scratch and finetune.

``fit`` trains with the recipe of a :class:`TrainConfig` (torchvision's classification reference
is the model: a training step and an evaluation step that each fit on a screen):

* the optimizer and a per-step schedule, linear warm-up then cosine (optim.py), label smoothing;
* crops, flips and colour jitter on the training device (data/preprocessing.py), then optional
  mixup/cutmix with per-sample draws (mixing.py);
* an optional moving average of the weights (ema.py): when on, it is what is validated, kept and
  evaluated;
* validation every epoch, the best-val-accuracy checkpoint written atomically, early stopping
  after ``early_stop_patience`` epochs without improvement, and an optional per-epoch hook that
  may stop the run (a sweep's pruner).

Batches come from the prepared uint8 cache (data/batches.py). The precision (``amp: auto``: bf16
where the hardware computes it natively, fp16 with a GradScaler on CUDA 7.x, else fp32; device.py)
and channels_last apply on every device; torch.compile is optional.
On one CPU the same params and seed give the same metrics and byte-identical checkpoints run after
run. Per-step values stay on the device: the host syncs once per epoch. Under torchrun it trains
with DistributedDataParallel (see distributed.py).
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
from ..core.device import Precision, choose_precision, select_device
from .ema import WeightEMA
from .mixing import Mixer, MixDraws
from .optim import make_optimizer, make_scheduler
from .resume import Progress, ResumeState, run_fingerprint
from .tracking import EpochLogger, epoch_logger

EpochHook = Callable[[dict[str, float]], bool]  # an epoch's row -> stop now


@dataclass
class FitResult:
    """What a training run achieved (:meth:`summary`, the same on every re-run) and how fast (:meth:`timing`)."""

    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    pruned_after_epoch: int | None = None  # a sweep's pruner stopped the run after this epoch
    history: list[dict[str, float]] = field(default_factory=list)
    precision: Precision = Precision("fp32", "")  # what amp resolved to on this machine (timing, not results)

    def summary(self) -> dict[str, Any]:
        """Results only: a re-run with the same params, seed and machine writes the same bytes."""
        return {k: v for k, v in self.__dict__.items() if k not in ("history", "precision")}

    def timing(self) -> dict[str, Any]:
        """Wall time and throughput: they change from run to run, so they live in a file of their own."""
        seconds = [row["epoch_seconds"] for row in self.history]
        train_seconds = sum(row["train_seconds"] for row in self.history)
        images = sum(row["train_images"] for row in self.history)
        return {
            "train_seconds": round(sum(seconds), 3),
            "images_per_s": round(images / train_seconds, 2) if train_seconds else 0.0,
            "epoch_seconds": [round(s, 3) for s in seconds],
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
        }


class Runner:
    """Runs forward (+ backward) on device batches under the right precision, wrapped in DDP when distributed."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, ctx: distributed.Context = distributed.Context()) -> None:
        self.device = device
        self.ctx = ctx
        cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.precision = choose_precision(device, cfg.amp)  # resolved once per run
        self.amp_dtype = self.precision.dtype
        # fp16 only; step() unscales before stepping (a gradient clip would need scaler.unscale_(optimizer) first)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scaled)
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

    def train_epoch(self, loader: BatchLoader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, *, mix: Mixing | None = None,
                    ema: WeightEMA | None = None, desc: str = "train") -> dict[str, float]:
        """One training pass: a step per batch (optionally mixed), the schedule and the average follow it."""
        self.model.train()
        totals, start, offset = _Totals(self.device), time.perf_counter(), 0
        for x, y in tqdm(loader, desc=desc, leave=False, mininterval=2.0, dynamic_ncols=True, disable=not self.ctx.is_main):
            target = y
            if mix is not None:
                x, target = mix.mixer(x, y, mix.draws[offset : offset + len(y)])
                offset += len(y)
            with self.autocast():
                logits = self.train_forward(x.contiguous(memory_format=self.memory_format))
                loss = loss_fn(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(self.model)
            totals.add(loss, logits, y)
        return totals.result(self.ctx, start)

    @torch.no_grad()
    def evaluate(self, loader: BatchLoader, loss_fn: nn.Module, model: nn.Module | None = None, desc: str = "val") -> dict[str, float]:
        """One pass without gradients over ``loader`` with ``model`` (default: the trained one)."""
        forward = self.eval_forward if model is None else model
        (self.model if model is None else model).eval()
        totals, start = _Totals(self.device), time.perf_counter()
        for x, y in tqdm(loader, desc=desc, leave=False, mininterval=2.0, dynamic_ncols=True, disable=not self.ctx.is_main):
            with self.autocast():
                logits = forward(x.contiguous(memory_format=self.memory_format))
                loss = loss_fn(logits.float(), y)
            totals.add(loss, logits, y)
        return totals.result(self.ctx, start)


class _Totals:
    """Loss, correct predictions and images summed on the device; one host sync per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.dtype = accumulator_dtype(device)
        self.loss = torch.zeros((), device=device, dtype=self.dtype)
        self.correct = torch.zeros((), device=device, dtype=self.dtype)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach() * y.shape[0]
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += y.shape[0]

    def result(self, ctx: distributed.Context, start: float) -> dict[str, float]:
        """loss, acc and images summed over every rank (the epoch's one host sync), and this rank's seconds."""
        totals = torch.stack([self.loss, self.correct, torch.tensor(float(self.seen), device=self.loss.device, dtype=self.dtype)])
        loss_sum, correct, seen = distributed.sum_across(totals, ctx).tolist()
        return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "images": int(seen),
                "seconds": time.perf_counter() - start}


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for the epoch's sums, except on MPS, which has no float64 (float32 counts images exactly to 2**24)."""
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass(frozen=True)
class Mixing:
    """A :class:`Mixer` and the epoch's draws (one per image of this rank, in visiting order, on the device)."""

    mixer: Mixer
    draws: MixDraws


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run: every epoch reseeds dropout, batch order, augmentation and
    mixing from it, so a run resumed after epoch k draws exactly what an uninterrupted one does
    (x1000: a run seed's epochs never reach the next run seed's)."""
    return seed * 1000 + epoch


@dataclass
class _Epochs:
    """What every epoch of one :func:`fit` uses, and the epoch's steps: train, validate, keep, ask the hook."""

    runner: Runner
    cfg: TrainConfig
    spec: ModelSpec
    train_loader: BatchLoader
    val_loader: BatchLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module  # label-smoothed: training and validation losses are the same measure
    ema: WeightEMA | None
    mixer: Mixer
    seed: int
    checkpoint_path: str | Path
    epoch_hook: EpochHook | None

    @property
    def kept(self) -> nn.Module:
        """What is validated, checkpointed and returned: the weights, or their moving average."""
        return self.runner.model if self.ema is None else self.ema.module

    def run(self, epoch: int) -> tuple[dict[str, float], dict[str, float], float]:
        """Train one epoch and validate: (train row, val row, the epoch's first lr)."""
        ctx, seed = self.runner.ctx, epoch_seed(self.seed, epoch)
        torch.manual_seed(seed + 7919 * ctx.rank)  # a prime apart: each rank's dropout draws its own stream
        self.train_loader.set_epoch(seed)  # the same order on every rank: each takes its shard of it
        mix = None
        if self.mixer.enabled:
            draws = self.mixer.draw(len(self.train_loader.order()), torch.Generator().manual_seed(seed * 1013 + ctx.rank))
            mix = Mixing(self.mixer, draws.to(self.runner.device))
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        tr = self.runner.train_epoch(self.train_loader, self.loss_fn, self.optimizer, self.scheduler, mix=mix, ema=self.ema,
                                     desc=f"epoch {epoch}/{self.cfg.epochs} train")
        distributed.broadcast_buffers(self.runner.model, ctx)
        if self.ema is not None:  # averaged from each rank's own last-step statistics: rank 0's for all
            distributed.broadcast_buffers(self.ema.module, ctx)
        va = self.runner.evaluate(self.val_loader, self.loss_fn, None if self.ema is None else self.ema.module,
                                  desc=f"epoch {epoch}/{self.cfg.epochs} val")
        return tr, va, lr

    def keep(self, progress: Progress) -> dict[str, torch.Tensor]:
        """The improved weights, on the CPU, and (rank 0) the best checkpoint written."""
        best_state = {k: v.detach().cpu().clone() for k, v in self.kept.state_dict().items()}
        if self.runner.ctx.is_main:
            save_checkpoint(self.checkpoint_path, best_state, self.spec, epoch=progress.best_epoch, metrics=progress.best_metrics)
        return best_state

    def hook_stops(self, progress: Progress) -> bool:
        """Whether the epoch hook (a sweep's pruner, on rank 0) stops the run: every rank stops together."""
        ctx = self.runner.ctx
        stop = self.epoch_hook is not None and ctx.is_main and self.epoch_hook(progress.history[-1])
        if distributed.sum_across(torch.tensor(float(stop), device=self.runner.device), ctx).item() == 0:
            return False
        if ctx.is_main:
            print(f"pruned after epoch {progress.epoch} (best val accuracy {progress.best_acc:.3f} at epoch "
                  f"{progress.best_epoch})", flush=True)
        return True


def _epochs(model: nn.Module, spec: ModelSpec, train_split: PreparedSplit, val_split: PreparedSplit, cfg: TrainConfig,
            seed: int, checkpoint_path: str | Path, param_groups: list[dict[str, Any]] | None,
            epoch_hook: EpochHook | None) -> _Epochs:
    """Device, loaders, optimizer, schedule, average and mixing of one run, printed in one line."""
    ctx, device = distributed.start(select_device(cfg.device))
    runner = Runner(model, cfg, device, ctx)
    shard = {"rank": ctx.rank, "world_size": ctx.world_size}
    train_loader = BatchLoader(train_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=cfg.augment),
                               shuffle=True, pad=True, **shard)
    val_loader = BatchLoader(val_split, cfg.batch_size, device, BatchTransform(spec.preprocessing, augment=False), **shard)
    optimizer = make_optimizer(cfg, param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}])
    ema = WeightEMA(runner.model, cfg.ema_epochs, len(train_loader)) if cfg.ema_epochs > 0 else None
    if ctx.is_main:
        print(f"training on {device}: {runner.precision.describe()}, {'channels_last' if cfg.channels_last else 'NCHW'}; "
              + describe_recipe(cfg, ema), flush=True)
    return _Epochs(runner, cfg, spec, train_loader, val_loader, optimizer, make_scheduler(cfg, optimizer, len(train_loader)),
                   nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), ema, Mixer(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob, len(spec.class_names)), seed,
                   checkpoint_path, epoch_hook)


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
    epoch_hook: EpochHook | None = None,
) -> FitResult:
    """Train ``model``; the best-val-accuracy weights end up in ``checkpoint_path`` and in ``model``.

    With ``cfg.ema_epochs`` the moving average of the weights is what is validated, kept and
    returned. Every epoch reseeds the RNGs from :func:`epoch_seed`, so a run resumed from ``resume``
    after epoch k ends exactly like an uninterrupted one. ``epoch_hook`` (a sweep's pruner) sees each
    epoch's row on rank 0 and stops the run by returning True. Under torchrun every rank calls this;
    rank 0 alone writes files.
    """
    spec.preprocessing.check_source(f"the {spec.arch} model")  # before any device or process-group work
    run = _epochs(model, spec, train_split, val_split, cfg, seed, checkpoint_path, param_groups, epoch_hook)
    ctx = run.runner.ctx
    log_epoch = log_epoch if ctx.is_main else None
    resume = resume or ResumeState(None)
    writer = resume if ctx.is_main else ResumeState(None)
    states = {"model": model, "optimizer": run.optimizer, "scheduler": run.scheduler, "scaler": run.runner.scaler, "ema": run.ema}
    progress, best_state = _restore(resume, states, checkpoint_path, spec, log_epoch, ctx.is_main)
    while progress.epoch < cfg.epochs and not progress.stopped_early and progress.pruned_after_epoch is None:
        epoch = progress.epoch + 1
        tr, va, lr = run.run(epoch)
        improved = progress.record(epoch, tr, va, lr, cfg.early_stop_patience)
        if ctx.is_main:
            _print_epoch(progress, cfg.epochs, improved)
        if log_epoch is not None:
            log_epoch(progress.history[-1])
        if improved:
            best_state = run.keep(progress)
        if run.hook_stops(progress):
            progress.pruned_after_epoch = epoch
        writer.save(progress, best_state, **{k: None if s is None else s.state_dict() for k, s in states.items()})
    writer.clear()
    distributed.stop(ctx)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(progress.best_epoch, progress.best_acc, progress.best_loss, len(progress.history),
                     progress.stopped_early, progress.pruned_after_epoch, progress.history, run.runner.precision)


def describe_recipe(cfg: TrainConfig, ema: WeightEMA | None) -> str:
    """One line: the schedule, smoothing, averaging and mixing this run uses."""
    parts = [f"lr {cfg.lr:g}, {cfg.warmup_epochs} warm-up epoch(s) then {cfg.schedule}",
             f"label smoothing {cfg.label_smoothing:g}"]
    parts.append("no weight average" if ema is None else f"weight average over {cfg.ema_epochs:g} epochs (decay {ema.decay:.4f}/step)")
    mixes = [f"{name} alpha {alpha:g}" for name, alpha in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if alpha > 0]
    parts.append(f"{' + '.join(mixes)} on {cfg.mix_prob:.0%} of images" if mixes and cfg.mix_prob > 0 else "no mixing")
    return ", ".join(parts)


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
    if progress.stopped_early and progress.best_acc >= 1.0:
        print(f"early stop: val accuracy 1.000 at epoch {progress.best_epoch}; no later epoch can beat it")
    elif progress.stopped_early:
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
    logging: LoggingConfig | None = None,
    run_config: dict[str, Any] | None = None,
    resume_path: Path | None = None,
    epoch_hook: EpochHook | None = None,
) -> FitResult:
    """Train on the prepared train split, validate on the val split (``prepared_dir``, see data/prepared.py).

    Curves go to dvclive in ``live_dir`` (and to W&B when ``logging.wandb``, none without ``logging``;
    ``run_config`` is the params recorded with that run). With ``resume_path``, progress is saved there
    after every epoch and a killed run started again continues from its last complete epoch.
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
