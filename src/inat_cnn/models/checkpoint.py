"""The checkpoint format: everything needed to rebuild a trained model without params.yaml.

A checkpoint is a dict saved with torch.save (serialised in memory, then written atomically, so
equal content gives equal bytes)::

    {"format": 1, "model_state", "arch", "model_config", "class_names", "preprocessing",
     "epoch", "metrics", "temperature"}

``arch`` is ``"scratch_cnn"`` for the from-scratch CNN (``model_config`` = the `model` params)
or a pretrained architecture name (``model_config`` = {"arch": ...}); ``preprocessing`` is a
:class:`~inat_cnn.data.preprocessing.Preprocessing` dict, so evaluate and predict use the checkpoint's
own input size and normalisation. ``temperature`` (optional: 1.0 when absent, as in checkpoints
from before calibration) divides the logits for calibrated confidences; the training stages fit it
on the validation split (:mod:`inat_cnn.evaluation.calibration`). :func:`inat_cnn.models.build.load_model` turns one into a ready
model. The optimizer, scheduler and RNG progress of an unfinished run live in the resume file
instead (see :class:`inat_cnn.training.resume.ResumeState`).
"""

from __future__ import annotations

import difflib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import FieldError, UserError
from ..core.files import write_bytes
from ..data.images import file_problem
from ..data.preprocessing import Preprocessing

FORMAT = 1
SCRATCH_ARCH = "scratch_cnn"
SECTIONS = ("format", "model_state", "arch", "model_config", "class_names", "preprocessing", "epoch", "metrics", "temperature")
REQUIRED = SECTIONS[:6]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, apart from its weights."""

    arch: str
    model_config: dict[str, Any]
    class_names: list[str]
    preprocessing: Preprocessing


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
    _write(path, payload)


def _write(path: str | Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def _valid_temperature(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def temperature_of(ckpt: dict[str, Any]) -> float:
    """The checkpoint's fitted temperature; 1.0 (the raw softmax) for a checkpoint without one."""
    return float(ckpt.get("temperature", 1.0))


def has_temperature(ckpt: dict[str, Any]) -> bool:
    """Whether a temperature was fitted for this checkpoint (none: too small or saturated a val split, or older)."""
    return "temperature" in ckpt


def set_temperature(path: str | Path, temperature: float | None) -> None:
    """Store ``temperature`` in the checkpoint at ``path`` (None: remove it) — rewritten atomically,
    everything else kept."""
    if temperature is not None and not _valid_temperature(temperature):
        raise FieldError("temperature", temperature, "is not allowed; expected a finite number > 0")
    ckpt = load_checkpoint(path)
    ckpt.pop("temperature", None)
    if temperature is not None:
        ckpt["temperature"] = float(temperature)
    _write(path, ckpt)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file; every problem is one UserError naming the file and the section."""
    path = Path(path)
    if not path.is_file():
        if not os.path.lexists(path):
            raise UserError(f"{path}: checkpoint not found; train it first (dvc repro)")
        raise UserError(f"{path}: {file_problem(path) or 'not a regular file'}, not a checkpoint file; give the .pt file "
                        "train_scratch or finetune wrote (models/scratch.pt, models/finetune.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    hint = "give a checkpoint written by train_scratch or finetune (models/*.pt)"
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: holds a {type(ckpt).__name__}, not an inat-cnn checkpoint (a dict of {', '.join(REQUIRED)}); {hint}")
    unknown = [k for k in ckpt if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{path}: unknown section {unknown[0]!r}{guess}; a checkpoint has {', '.join(SECTIONS)}; {hint}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not an inat-cnn checkpoint: the section(s) {', '.join(missing)} are missing; {hint}")
    checks = {
        "model_state": isinstance(ckpt["model_state"], dict) and len(ckpt["model_state"]) > 0,
        "arch": isinstance(ckpt["arch"], str) and bool(ckpt["arch"]),
        "model_config": isinstance(ckpt["model_config"], dict) and len(ckpt["model_config"]) > 0,
        "class_names": isinstance(ckpt["class_names"], (list, tuple)) and len(ckpt["class_names"]) >= 2,
        "preprocessing": isinstance(ckpt["preprocessing"], dict) and "input_size" in ckpt["preprocessing"],
        "temperature": _valid_temperature(ckpt.get("temperature", 1.0)),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise UserError(f"{path}: the section {bad[0]!r} is empty or malformed ({type(ckpt[bad[0]]).__name__}); {hint}")
    return ckpt


def spec_of(ckpt: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        arch=ckpt["arch"],
        model_config=ckpt["model_config"],
        class_names=list(ckpt["class_names"]),
        preprocessing=Preprocessing.from_dict(ckpt["preprocessing"]),
    )


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
