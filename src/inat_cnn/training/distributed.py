"""Multi-process training under ``torchrun`` (DistributedDataParallel), and nothing when run alone.

A training stage with ``processes: N`` (N > 1) calls :func:`relaunch` first, which runs the same
script as ``torchrun --standalone --nproc_per_node=N`` and exits with its status, so DVC records the
outputs of a multi-process run like any other. torchrun starts N copies of the stage with RANK,
LOCAL_RANK and WORLD_SIZE set; :func:`start` then joins the process group (NCCL on
CUDA, one GPU per process; gloo on CPU). Each rank trains on its shard of every batch order
(see :class:`~inat_cnn.data.batches.BatchLoader`); DDP averages the gradients, so every rank
holds the same weights after every step. Rank 0 alone writes checkpoints, curves and metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The torchrun layout of this process (rank 0 of 1 outside torchrun)."""
    return Context(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def is_main_process() -> bool:
    return from_env().is_main


def relaunch(processes: int, script: str) -> None:
    """Outside torchrun with ``processes`` > 1: run ``script`` as ``processes`` torchrun workers, then exit
    with their status. Inside torchrun, or with one process, return at once (the caller trains)."""
    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", script]
    print(f"starting {processes} processes: {' '.join(command[1:])}", flush=True)
    sys.exit(subprocess.run(command, check=False).returncode)


def start(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; return the context and this rank's device."""
    ctx = from_env()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        if torch.cuda.device_count() <= ctx.local_rank:
            raise ConfigError(
                f"torchrun started {ctx.world_size} processes but only {torch.cuda.device_count()} GPU(s) are visible; "
                "use --nproc_per_node <= the GPU count"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"processes > 1 runs on CUDA GPUs (NCCL) or on the CPU (gloo), not on {device.type}; "
                          "use processes: 1 or device: cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # NCCL uses the GPU set just above
    return ctx, device


def sum_across(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over every rank (identity when alone)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module, ctx: Context) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP syncs buffers at the start of each forward, so after an epoch's last step every rank holds
    its own running statistics; once per epoch this makes them identical before validation.
    """
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def stop(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
