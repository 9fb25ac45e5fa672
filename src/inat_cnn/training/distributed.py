"""Multi-process training under ``torchrun`` (DistributedDataParallel), and nothing when run alone.

``torchrun --standalone --nproc_per_node=N stages/train_scratch.py`` starts N copies of a stage
with RANK, LOCAL_RANK and WORLD_SIZE set; :func:`start` then joins the process group (NCCL on
CUDA, one GPU per process; gloo on CPU). Each rank trains on its shard of every batch order
(see :class:`~inat_cnn.data.batches.BatchLoader`); DDP averages the gradients, so every rank
holds the same weights after every step. Rank 0 alone writes checkpoints, curves and metrics.
"""

from __future__ import annotations

import os
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
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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
