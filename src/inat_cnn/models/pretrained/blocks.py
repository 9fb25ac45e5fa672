"""A model's ordered blocks (stem ... last stage, then ``head``), the unit of freezing.

Each architecture family has its layout, looked up by name in :data:`LAYOUTS`; any other
architecture is cut by :func:`generic_blocks`.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from torch import nn

from .heads import AUX_HEADS, final_layer_name

HEAD = "head"

Blocks = list[tuple[str, nn.Module]]
Layout = Callable[[nn.Module, Blocks], Blocks]  # (model, its top-level children but the head) -> blocks


class BlockGroup(nn.Module):
    """Several modules (and loose parameters) of a model that form one block.

    It only refers to them: the model is unchanged, and freezing the group freezes them.
    """

    def __init__(self, members: Iterable[nn.Module], params: Iterable[tuple[str, nn.Parameter]] = ()):
        super().__init__()
        self.members = nn.ModuleList(members)
        for name, param in params:
            self.register_parameter(name.replace(".", "_"), param)


def _block(*members: nn.Module, params: Iterable[tuple[str, nn.Parameter]] = ()) -> nn.Module:
    params = list(params)
    return members[0] if len(members) == 1 and not params else BlockGroup(members, params)


def members(block: nn.Module) -> list[nn.Module]:
    """The modules of the model that ``block`` stands for."""
    return list(block.members) if isinstance(block, BlockGroup) else [block]


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_blocks(arch: str, model: nn.Module) -> Blocks:
    """Ordered blocks: the backbone's (family layout), then ``pre_logits`` if the classifier has hidden
    layers (vgg, mobilenet_v3, alexnet, maxvit), then ``head``: the new layer plus anything
    parameter-free around it (and the aux heads when kept)."""
    final = final_layer_name(model)
    top = final.split(".", 1)[0]
    container = getattr(model, top)
    aux = [getattr(model, n) for n in AUX_HEADS if getattr(model, n, None) is not None]
    tail: Blocks = []
    head_members = [container]
    if isinstance(container, nn.Sequential) and "." in final:
        children = list(container.children())
        pos = list(container._modules).index(final.split(".")[1])
        if any(isinstance(m, nn.Linear) for c in children[:pos] for m in c.modules()):
            tail.append(("pre_logits", _block(*children[:pos])))
            head_members = children[pos:]
    tail.append((HEAD, _block(*head_members, *aux)))
    trunk = [(n, m) for n, m in model.named_children() if n != top and n not in AUX_HEADS]
    return layout_of(arch)(model, trunk) + tail


def layout_of(arch: str) -> Layout:
    """The layout of ``arch``: that of the longest name in :data:`LAYOUTS` it starts with, else generic."""
    keys = [key for key in LAYOUTS if arch.startswith(key)]
    return LAYOUTS[max(keys, key=len)] if keys else generic_blocks


# ------------------------------------------------------------------------------ layouts


def _resnet_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    return [("stem", _block(m.conv1, m.bn1))] + [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]


def _timm_effnet_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    stages = [(f"stage{i + 1}", b) for i, b in enumerate(m.blocks)]
    return [("stem", _block(m.conv_stem, m.bn1)), *stages, ("final_conv", _block(m.conv_head, m.bn2))]


def _efficientnet_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    f = list(m.features)
    return [("stem", f[0]), *[(f"stage{i}", s) for i, s in enumerate(f[1:-1], 1)], ("final_conv", f[-1])]


def _out_channels(module: nn.Module) -> int:
    return [c for c in module.modules() if isinstance(c, nn.Conv2d)][-1].out_channels


def _mobilenet_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    """MobileNet's features are single inverted-residual blocks: group runs of equal output
    width into stages, as EfficientNet's features already are (mobilenet_v2: 7 stages)."""
    f = list(m.features)
    stages: list[list[nn.Module]] = []
    for block in f[1:-1]:
        if stages and _out_channels(stages[-1][-1]) == _out_channels(block):
            stages[-1].append(block)
        else:
            stages.append([block])
    return [("stem", f[0]), *[(f"stage{i}", _block(*s)) for i, s in enumerate(stages, 1)], ("final_conv", f[-1])]


def _staged_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    """convnext / swin: features = [stem, stage1, downsample, stage2, ...]: each downsample joins
    the stage it feeds; swin's final norm is a block of its own (like vit's ln)."""
    f = list(m.features)
    blocks = [("stem", f[0]), ("stage1", f[1])]
    blocks += [(f"stage{i // 2 + 1}", _block(f[i], f[i + 1])) for i in range(2, len(f), 2)]
    return blocks + [(n, c) for n, c in trunk if n != "features" and _n_params(c)]


def _vgg_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    """The conv layers, split after each max-pool (5 stages)."""
    stages: list[list[nn.Module]] = [[]]
    for layer in m.features:
        stages[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    return [(f"stage{i}", _block(*s)) for i, s in enumerate((s for s in stages if s), 1)]


def _inception_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    """googlenet: stem convs, inception3/4/5 groups; inception_v3: stem convs, Mixed_5/6/7 groups."""
    groups: dict[str, list[nn.Module]] = {}
    for name, child in trunk:
        if not _n_params(child):
            continue
        match = re.match(r"(inception|Mixed_)(\d)", name)
        key = f"{match.group(1).lower().rstrip('_')}{match.group(2)}" if match else "stem"
        groups.setdefault(key, []).append(child)
    return [(k, _block(*v)) for k, v in groups.items()]


def _vit_blocks(m: nn.Module, trunk: Blocks) -> Blocks:
    enc = m.encoder
    stem = _block(m.conv_proj, params=[("class_token", m.class_token), ("pos_embedding", enc.pos_embedding)])
    return [("stem", stem), *enc.layers.named_children(), ("ln", enc.ln)]


def _is_plain(module: nn.Module) -> bool:
    """A layer, or a flat run of layers (Conv-BN-act), as opposed to a residual block or stage."""
    return all(not list(c.children()) for c in module.children())


def generic_blocks(model: nn.Module, trunk: Blocks) -> Blocks:
    """Any other architecture: top-level children in order; a child holding >= 90% of the weights
    (densenet's features, regnet's trunk, maxvit's blocks) is replaced by its children, repeatedly;
    runs of plain layers merge into one block, cut after each pooling layer."""
    items = list(trunk)
    loose = list(model.named_parameters(recurse=False))
    while True:
        total = sum(_n_params(c) for _, c in items)
        big = [i for i, (_, c) in enumerate(items) if _n_params(c) >= 0.9 * total and sum(1 for x in c.children() if _n_params(x)) >= 2]
        if not big:
            break
        name, child = items[big[0]]
        loose += [(f"{name}.{n}", p) for n, p in child.named_parameters(recurse=False)]
        items[big[0] : big[0] + 1] = [(f"{name}.{n}", c) for n, c in child.named_children()]
    blocks: list[tuple[str, list[nn.Module]]] = []
    run_open = False
    for name, child in items:
        plain = _is_plain(child)
        if _n_params(child) or (run_open and plain):
            if run_open and plain:
                blocks[-1] = (blocks[-1][0].split("..")[0] + ".." + name, blocks[-1][1] + [child])
            else:
                blocks.append((name, [child]))
            run_open = plain
        if isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
            run_open = False
    blocks = [(name, ms) for name, ms in blocks if any(_n_params(m) for m in ms)]
    out = [(name, _block(*ms)) for name, ms in blocks]
    if loose:
        first_name, first = out[0]
        out[0] = (first_name, _block(*members(first), params=loose))
    return out


# An architecture name, or the start of one, -> its layout; the longest match wins.
LAYOUTS: dict[str, Layout] = {
    "efficientnet_lite": _timm_effnet_blocks,  # timm's, with the bundled weights
    "resnet": _resnet_blocks,
    "resnext": _resnet_blocks,
    "wide_resnet": _resnet_blocks,
    "efficientnet_": _efficientnet_blocks,
    "mobilenet_": _mobilenet_blocks,
    "convnext_": _staged_blocks,
    "swin_": _staged_blocks,
    "vgg": _vgg_blocks,
    "googlenet": _inception_blocks,
    "inception_v3": _inception_blocks,
    "vit_": _vit_blocks,
}
