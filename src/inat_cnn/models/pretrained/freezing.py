"""Freezing a :class:`~.build.PretrainedModel` block by block, the model a fine-tuning run starts
from, the optimizer's parameter groups, and parameter counts."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

from torch import nn

from ...core.config import FinetuneConfig
from ...core.errors import FieldError
from .blocks import HEAD, members
from .build import PretrainedModel, build_pretrained

if TYPE_CHECKING:
    from ..checkpoint import ModelSpec

STRATEGIES = ("freeze_all", "freeze_first_k", "unfreeze_all")


def apply_strategy(pm: PretrainedModel, strategy: str, trainable_blocks: int) -> None:
    """Set ``requires_grad`` per block and keep frozen blocks in eval mode.

    freeze_all: only the head trains. freeze_first_k: the last ``trainable_blocks`` blocks below
    the head and the head train. unfreeze_all: everything trains.
    """
    backbone = pm.backbone_blocks
    if strategy == "freeze_all":
        n_train = 0
    elif strategy == "unfreeze_all":
        n_train = len(backbone)
    elif strategy == "freeze_first_k":
        if not 0 <= trainable_blocks <= len(backbone):
            raise FieldError(
                "trainable_blocks", trainable_blocks, f"is not allowed for {pm.arch}; expected 0 to {len(backbone)}: "
                f"{pm.arch} has {len(backbone)} blocks below the head ({', '.join(n for n, _ in backbone)})"
            )
        n_train = trainable_blocks
    else:
        raise FieldError("strategy", strategy, f"is not allowed; expected one of {', '.join(STRATEGIES)}")
    first_trainable = len(backbone) - n_train
    for i, (_, block) in enumerate(pm.blocks):
        block.requires_grad_(i >= first_trainable)
    keep_frozen_blocks_in_eval(pm)


def finetune_model(cfg: FinetuneConfig, class_names: Sequence[str], source_size: int) -> tuple[PretrainedModel, "ModelSpec"]:
    """``cfg.arch`` with its pretrained weights, a new head and ``cfg.strategy`` applied, and the spec its
    checkpoints carry, for squares of ``source_size`` px."""
    from ..checkpoint import ModelSpec

    pm = build_pretrained(cfg.arch, cfg.weights, len(class_names))
    apply_strategy(pm, cfg.strategy, cfg.trainable_blocks)
    return pm, ModelSpec(cfg.arch, {"arch": cfg.arch}, list(class_names), pm.to_preprocessing(source_size=source_size))


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return type(module).train(module, False)


def keep_frozen_blocks_in_eval(pm: PretrainedModel) -> None:
    """Make every block without trainable parameters ignore ``train()``: it stays in eval mode.

    How: each module of a frozen block gets an instance attribute ``train`` (a functools.partial
    of :func:`_stay_in_eval`) that shadows ``nn.Module.train``. ``model.train()`` recurses into
    children by calling ``child.train(mode)``, so it reaches the override and the whole frozen
    subtree is set to eval: BatchNorm uses and keeps its running statistics, dropout and
    stochastic depth are off. Trainable blocks lose any override and follow ``model.train()``
    as usual. The override is a partial of a module-level function, so deepcopy and pickling
    work; state_dict is unaffected. :func:`apply_strategy` calls this.
    """
    for _, block in pm.blocks:
        frozen = not any(p.requires_grad for p in block.parameters())
        for member in members(block):
            if frozen:
                member.train = functools.partial(_stay_in_eval, member)
            else:
                member.__dict__.pop("train", None)
    pm.model.train(pm.model.training)  # apply now


def param_groups(pm: PretrainedModel, lr: float, backbone_lr_factor: float = 1.0, head_epochs: int = 0) -> list[dict[str, Any]]:
    """Optimizer groups of the parameters that train (after :func:`apply_strategy`): ``head`` at
    ``lr`` from the first epoch; ``backbone`` (its trainable blocks) at ``lr * backbone_lr_factor``
    from epoch ``head_epochs`` on (``start_epoch``, read by the lr schedule: the head learns the new
    classes before the backbone's features move). Empty groups are left out."""
    groups = [
        {"name": "backbone", "lr": lr * backbone_lr_factor, "start_epoch": head_epochs,
         "params": [p for _, b in pm.backbone_blocks for p in b.parameters() if p.requires_grad]},
        {"name": HEAD, "lr": lr, "start_epoch": 0, "params": [p for p in pm.head.parameters() if p.requires_grad]},
    ]
    return [g for g in groups if g["params"]]


def count_params(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (each shared parameter once)."""
    params = list(model.parameters())  # nn.Module.parameters() already yields each tensor once
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
