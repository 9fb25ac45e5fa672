"""Checkpoint format and the one loader that rebuilds any checkpoint into a ready model.

A checkpoint is a dict saved with torch.save (written to a temp file, then renamed)::

    {"format": 1, "model_state", "arch", "model_config", "class_names", "preprocessing",
     "epoch", "metrics"}

``arch`` is ``"scratch_cnn"`` for the from-scratch CNN (``model_config`` = the `model` params)
or a pretrained architecture name (``model_config`` = {"arch": ...}); ``preprocessing`` is a
:class:`~inat_cnn.data.preprocessing.Preprocessing` dict, so evaluate and predict use the checkpoint's
own input size and normalisation. The optimizer, scheduler and RNG progress of an unfinished run
live in the resume file instead (see :class:`inat_cnn.train.ResumeState`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ScratchModelConfig, from_dict
from .data.preprocessing import Preprocessing
from .errors import UserError
from .files import atomic_path

FORMAT = 1
SCRATCH_ARCH = "scratch_cnn"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, apart from its weights."""

    arch: str
    model_config: dict[str, Any]
    class_names: list[str]
    preprocessing: Preprocessing


def build_model(spec: ModelSpec) -> nn.Module:
    """An untrained model of ``spec``'s architecture with one output per class."""
    if spec.arch == SCRATCH_ARCH:
        from .models.scratch import ScratchCNN

        cfg = from_dict(ScratchModelConfig, spec.model_config, "model")
        return ScratchCNN(cfg, num_classes=len(spec.class_names))
    from .models.pretrained import build_pretrained

    return build_pretrained(spec.arch, None, num_classes=len(spec.class_names)).model


def save_checkpoint(
    path: str | Path, weights: dict[str, torch.Tensor], spec: ModelSpec, *, epoch: int, metrics: dict[str, Any]
) -> None:
    """Write ``weights`` (a model's state dict) with everything needed to rebuild the model."""
    payload = {
        "format": FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in weights.items()},
        "arch": spec.arch,
        "model_config": spec.model_config,
        "class_names": list(spec.class_names),
        "preprocessing": spec.preprocessing.to_dict(),
        "epoch": epoch,
        "metrics": metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train it first (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    missing = {"format", "model_state", "arch", "model_config", "class_names", "preprocessing"} - set(ckpt)
    if not isinstance(ckpt, dict) or missing:
        raise UserError(f"{path}: not an inat-cnn checkpoint (missing {sorted(missing)})")
    return ckpt


def spec_of(ckpt: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        arch=ckpt["arch"],
        model_config=ckpt["model_config"],
        class_names=list(ckpt["class_names"]),
        preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
    )


def load_model(path: str | Path) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild the checkpoint's model with its weights, in eval mode: (model, spec, checkpoint)."""
    ckpt = load_checkpoint(path)
    spec = spec_of(ckpt)
    model = build_model(spec)
    load_weights(model, ckpt["model_state"], source=str(path))
    return model.eval(), spec, ckpt


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with one clear message naming ``source`` and the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"{source}: weights do not fit this architecture "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for key, tensor in own.items():
        if tensor.shape != state[key].shape:
            raise UserError(
                f"{source}: weights do not fit this architecture: {key} has shape "
                f"{tuple(state[key].shape)} in the file but {tuple(tensor.shape)} in the model"
            )
    model.load_state_dict(state)
