"""Activation layers by name, and the set of activation classes that hooks look for."""

from __future__ import annotations

from torch import nn

from ..core.config import ACTIVATIONS, Activation
from ..core.errors import ConfigError

# Not in-place: guided backprop puts backward hooks on these modules, and an in-place
# activation would overwrite the tensor the hook hands back.
_CLASSES: dict[Activation, type[nn.Module]] = {  # the names: core/config.py's Activation
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01 (PyTorch's default)
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "sigmoid": nn.Sigmoid,
}

# Every torch.nn class that is an element-wise activation, including those torchvision and
# timm backbones use (ReLU6 and Hardswish in MobileNet/EfficientNet-Lite, SiLU, GELU, ...).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold,
)  # fmt: skip

# timm defines a few activations of its own (used when a model asks for them explicitly);
# they are recognised by module path so that importing this file does not import timm.
_TIMM_ACTIVATION_MODULES = ("timm.layers.activations", "timm.layers.activations_me")


def activation_class(name: str, key: str = "activation") -> type[nn.Module]:
    """The layer class for activation ``name``; ``key`` names the param in the error message."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise ConfigError(
            f"params: {key} = {name!r} is not allowed; expected one of {', '.join(ACTIVATIONS)}"
        ) from None


def make_activation(name: str, key: str = "activation") -> nn.Module:
    """Return a fresh activation layer for ``name`` (one of ``config.ACTIVATIONS``)."""
    return activation_class(name, key)()


def is_activation(module: nn.Module) -> bool:
    """True for an activation layer: one of :data:`ACTIVATION_TYPES` or a timm activation class."""
    return isinstance(module, ACTIVATION_TYPES) or type(module).__module__ in _TIMM_ACTIVATION_MODULES
