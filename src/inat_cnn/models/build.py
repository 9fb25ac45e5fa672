"""One factory for every model: ``build_model(spec)`` and ``load_model(checkpoint)``.

The architecture name picks the builder (the from-scratch CNN, or a pretrained architecture
from :mod:`inat_cnn.models.pretrained.build`); evaluate, predict and the tests all rebuild models here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..core.config import ScratchModelConfig, from_dict
from ..core.errors import ConfigError, UserError
from .checkpoint import SCRATCH_ARCH, ModelSpec, load_checkpoint, load_weights, spec_of


def build_model(spec: ModelSpec) -> nn.Module:
    """An untrained model of ``spec``'s architecture with one output per class."""
    if spec.arch == SCRATCH_ARCH:
        from .scratch import ScratchCNN

        cfg = from_dict(ScratchModelConfig, spec.model_config, "model")
        return ScratchCNN(cfg, num_classes=len(spec.class_names))
    from .pretrained.build import build_pretrained

    return build_pretrained(spec.arch, None, num_classes=len(spec.class_names)).model


def load_model(path: str | Path) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild the checkpoint's model with its weights, in eval mode: (model, spec, checkpoint)."""
    ckpt = load_checkpoint(path)
    spec = spec_of(ckpt)
    try:
        model = build_model(spec)
    except ConfigError as exc:
        raise UserError(f"{path}: its model_config / arch cannot be built ({exc}); the file is damaged or from another version") from exc
    load_weights(model, ckpt["model_state"], source=str(path))
    return model.eval(), spec, ckpt
