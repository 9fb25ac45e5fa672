"""The classifier's heads: find the final layer, give it (and any aux heads) ``num_classes``
outputs, or drop the aux heads."""

from __future__ import annotations

from torch import nn

AUX_HEADS = ("aux1", "aux2", "AuxLogits")  # googlenet, inception_v3


def final_layer_name(model: nn.Module) -> str:
    """The qualified name of the classifier's last layer: the last nn.Linear outside the aux heads
    (squeezenet has a 1x1 convolution there instead)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".", 1)[0] not in AUX_HEADS:
            last = name
    if last is None:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and name.startswith("classifier."):
                last = name
    if last is None:
        raise TypeError(f"{type(model).__name__}: no final classifier layer found")  # a bug here, not user input
    return last


def _replace_layer(model: nn.Module, name: str, num_classes: int) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    factory = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, **factory)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, bias=old.bias is not None, **factory)
    setattr(parent, child, new)


def replace_heads(model: nn.Module, num_classes: int) -> None:
    """A new final layer with ``num_classes`` outputs, in the main head and any aux heads."""
    names = [final_layer_name(model)]
    for aux in AUX_HEADS:
        head = getattr(model, aux, None)
        if isinstance(head, nn.Module):
            names.append(aux + "." + [n for n, m in head.named_modules() if isinstance(m, nn.Linear)][-1])
    for name in names:
        _replace_layer(model, name, num_classes)


def drop_aux_heads(model: nn.Module) -> None:
    """Remove googlenet's / inception_v3's auxiliary classifiers, as torchvision does for its weights."""
    for aux in AUX_HEADS:
        if getattr(model, aux, None) is not None:
            setattr(model, aux, None)
            model.aux_logits = False
