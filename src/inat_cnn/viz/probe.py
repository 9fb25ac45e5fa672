"""Looking inside a model without changing it: eval mode, a layer's output, the first conv."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class _Reached(Exception):
    """Raised by the capture hook to stop the forward pass once the layer has run."""


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own previous mode afterwards.

    Restoring per module (not ``model.train(was_training)``) keeps e.g. BatchNorm layers
    that a fine-tuning recipe froze in eval mode inside a training model.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def as_batch(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` or ``(1, C, H, W)`` → ``(1, C, H, W)``; anything else is an error."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape (1, C, H, W) or (C, H, W), got {tuple(image.shape)}")
    return image


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def forward_to(model: nn.Module, image: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Run ``model`` on ``image`` until ``layer`` has produced its output, and return that output.

    The rest of the forward pass is skipped. Gradients flow if they are enabled and
    ``image`` requires them; the caller chooses train/eval mode (see :func:`eval_mode`).
    """
    if not any(module is layer for module in model.modules()):
        raise ValueError(f"{type(layer).__name__} is not a submodule of {type(model).__name__}")
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        captured.append(output)
        raise _Reached

    handle = layer.register_forward_hook(hook)
    try:
        model(image)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"the model's forward never called the layer {type(layer).__name__}")
    output = captured[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"layer {type(layer).__name__} returned {type(output).__name__}, not a tensor")
    return output


def layer_activations(model: nn.Module, image: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``layer``'s output for one image, ``(C, H, W)`` on the CPU, in eval mode, without gradients."""
    with eval_mode(model), torch.no_grad():
        output = forward_to(model, as_batch(image).to(model_device(model)), layer)
    return output[0].detach().float().cpu()


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` in registration order (the stem of torchvision/timm CNNs and the scratch model)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d")
    return conv
