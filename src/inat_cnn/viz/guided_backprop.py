"""Guided back-propagation (Springenberg et al., 2015) of single neurons to the input image.

A *neuron* is the strongest response of one channel of ``target_layer`` on the image:
the channel's maximum over its spatial positions (``reduce="max"``, the default; the
gradient then starts from that one position). ``reduce="mean"`` uses the channel's
spatial mean instead (the gradient of the whole feature map). Gradients are taken with
respect to the model's input, i.e. the normalised image tensor.

Guided: a full backward hook on every activation module clamps the gradient leaving it
towards its input to be non-negative. For ReLU that gradient is already masked by the
forward pass (``x > 0``), so only positive gradients through positive inputs flow back,
exactly the rule of the paper; for GELU/SiLU/… the same clamp is the usual generalisation.
"""

from __future__ import annotations

import math

import os
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..models.activations import is_activation
from .canvas import new_grid, save_png, to_display_image
from .probe import as_batch, eval_mode, forward_to, model_device

Reduce = Literal["max", "mean"]


def _neuron(channel_output: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    if reduce == "max":
        return channel_output.amax()
    if reduce == "mean":
        return channel_output.mean()
    raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")


def top_channels(model: nn.Module, image: torch.Tensor, target_layer: nn.Module, k: int,
                 reduce: Reduce = "max") -> list[int]:
    """The ``k`` channels of ``target_layer`` whose neuron (see module doc) is largest on ``image``.

    Ordered from strongest; ties keep the lower channel index (stable sort), so the
    choice is deterministic. Returns all channels when the layer has fewer than ``k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with eval_mode(model), torch.no_grad():
        output = forward_to(model, as_batch(image).to(model_device(model)), target_layer)
    scores = torch.stack([_neuron(channel, reduce) for channel in output[0]]).float().cpu()
    return torch.argsort(scores, descending=True, stable=True)[:k].tolist()


@contextmanager
def _guided_hooks(model: nn.Module, hooked: Callable[[nn.Module], bool], skip: nn.Module) -> Iterator[None]:
    """Clamp activation gradients to >= 0 while inside; in-place modules are made out-of-place.

    Full backward hooks fail on modules whose input or output is modified in place, so
    every module with ``inplace=True`` is switched off for the duration and restored.
    ``skip`` (the target layer) is not hooked: its output is where the gradient starts.
    """
    def clamp(module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        return tuple(None if g is None else g.clamp(min=0) for g in grad_input)

    activations = [m for m in model.modules() if hooked(m) and m is not skip]
    if not activations:
        raise ValueError(f"{type(model).__name__} has no activation module to guide; "
                         "pass activation_types= with the classes it uses")
    in_place = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    handles = []
    try:
        for module in in_place:
            module.inplace = False
        handles = [m.register_full_backward_hook(clamp) for m in activations]
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in in_place:
            module.inplace = True


def _input_gradients(model: nn.Module, image: torch.Tensor, target_layer: nn.Module,
                     channels: Sequence[int], reduce: Reduce,
                     hooked: Callable[[nn.Module], bool] | None) -> torch.Tensor:
    channels = [int(c) for c in channels]
    if not channels:
        raise ValueError("no channels given")
    hooks = _guided_hooks(model, hooked, skip=target_layer) if hooked is not None else nullcontext()
    with eval_mode(model), hooks, torch.enable_grad():
        x = as_batch(image).detach().to(model_device(model)).clone().requires_grad_(True)
        output = forward_to(model, x, target_layer)
        bad = [c for c in channels if not 0 <= c < output.shape[1]]
        if bad:
            raise ValueError(f"channels {bad} are outside 0..{output.shape[1] - 1} of the target layer")
        gradients = []
        for i, channel in enumerate(channels):
            (grad,) = torch.autograd.grad(_neuron(output[0, channel], reduce), x,
                                          retain_graph=i < len(channels) - 1)
            gradients.append(grad[0])
    return torch.stack(gradients).detach().float().cpu()


def guided_backprop(model: nn.Module, image: torch.Tensor, target_layer: nn.Module, channels: Sequence[int],
                    activation_types: tuple[type[nn.Module], ...] | None = None,
                    reduce: Reduce = "max") -> torch.Tensor:
    """Guided-backprop maps ``(len(channels), C, H, W)`` (CPU) for neurons of ``target_layer``.

    ``image`` is one model input ``(1, C, H, W)`` or ``(C, H, W)``. The guided modules are
    the instances of ``activation_types``; by default every element-wise activation of
    torch.nn and timm (:func:`inat_cnn.models.activations.is_activation`). The model runs
    in eval mode; afterwards every module's mode, ``inplace`` flag and hooks are as before,
    and no parameter's ``.grad`` has been touched.
    """
    if activation_types is None:
        hooked = is_activation
    else:
        types = tuple(activation_types)
        hooked = lambda module: isinstance(module, types)  # noqa: E731
    return _input_gradients(model, image, target_layer, channels, reduce, hooked)


def vanilla_gradient(model: nn.Module, image: torch.Tensor, target_layer: nn.Module, channels: Sequence[int],
                     reduce: Reduce = "max") -> torch.Tensor:
    """Plain input gradients of the same neurons as :func:`guided_backprop` (no hooks), for comparison."""
    return _input_gradients(model, image, target_layer, channels, reduce, None)


def gradient_to_display(gradient: torch.Tensor) -> np.ndarray:
    """A gradient map ``(C, H, W)`` as an image in [0, 1]: zero is mid-grey, ±3 RMS spans the range.

    Per map: ``0.5 + g / (6 · rms(g))``, clipped; an all-zero map stays grey.
    """
    g = gradient.detach().float().cpu()
    rms = g.pow(2).mean().sqrt().item()
    return to_display_image(0.5 + g / (6 * rms) if rms > 0 else torch.full_like(g, 0.5))


def guided_backprop_grid(gradients: torch.Tensor, channel_ids: Sequence[int], out_path: str | os.PathLike,
                         image: np.ndarray | torch.Tensor | None = None, title: str | None = None) -> Figure:
    """Write the maps ``(N, C, H, W)`` (after the input, when given) in a near-square grid, row by row,
    ceil(sqrt(cells)) columns wide: ten maps and the input are 4 x 3, not one column eleven images tall.

    Each cell is labelled "channel c" and normalised with :func:`gradient_to_display`; unused cells stay
    blank. ``image`` is the un-normalised input (uint8 HWC or float CHW in [0, 1]).
    """
    if gradients.dim() != 4 or len(gradients) != len(channel_ids):
        raise ValueError(f"expected {len(channel_ids)} maps (N, C, H, W), got shape {tuple(gradients.shape)}")
    count = len(gradients) + (image is not None)
    cols = math.ceil(math.sqrt(count))
    fig, axes = new_grid(math.ceil(count / cols), cols, cell_w=3.2, cell_h=3.4)
    cells = iter(axes.flat)
    if image is not None:
        ax = next(cells)
        ax.imshow(to_display_image(image), cmap="gray")
        ax.set_title("input", fontsize=10)
    for ax, gradient, channel in zip(cells, gradients, channel_ids):
        ax.imshow(gradient_to_display(gradient), cmap="gray")
        ax.set_title(f"channel {channel}", fontsize=10)
    save_png(fig, out_path, title or "guided backprop")
    return fig
