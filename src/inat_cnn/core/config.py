"""Typed configuration: one frozen pydantic model per params.yaml section, with no defaults.

params.yaml is the one place defaults live: every key must be given (a key or section left out is
refused, never trained on values of the code's own), and tests/test_config.py fails on any drift
between these fields and the file's keys. The library never reads params.yaml; stage scripts do, and
turn each section into one of these objects with :func:`from_dict`, which checks every key before any
work starts: pydantic's first error becomes one :class:`ConfigError` line naming the key
(``train.lr``), the value and what is allowed.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .errors import ConfigError

# The one list of each set of names: core/device.py, training/optim.py and models/activations.py read them.
Activation = Literal["relu", "gelu", "silu", "mish", "leaky_relu", "elu", "tanh", "selu", "sigmoid"]
OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["cosine", "none"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
AmpName = Literal["auto", "bf16", "fp16", "none"]
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads "1e-3" (no dot) as a string: a float field takes it as the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Any:
    return Field(**{"gt" if lo_open else "ge": lo, "lt" if hi_open else "le": hi})


Num = Annotated[float, BeforeValidator(_yaml_number)]
Text = Annotated[str, Field(min_length=1)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNeg = Annotated[Num, Field(ge=0)]
Share = Annotated[Num, _between(0, 1, hi_open=True)]  # [0, 1)


def _bad(field: str, value: Any, allowed: str) -> typing.NoReturn:
    """Refuse ``field`` of the model being checked (a check across fields); from_dict names the key."""
    raise PydanticCustomError("not_allowed", "{allowed}", {"field": field, "value": value, "allowed": allowed})


class Section(BaseModel):
    """A params section: unknown keys refused, immutable, no type coercion (YAML lists become tuples)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()} if isinstance(data, dict) else data


T = typing.TypeVar("T", bound=Section)


def from_dict(cls: type[T], data: Any, section: str) -> T:
    """Build ``cls`` from the params mapping ``data`` of section ``section``; ConfigError names a bad key.

    A section left out or null (``params.get`` gives None for both) is refused, and so is a key left
    out of a present section: the code has no defaults to fall back on (params.yaml lists them all).
    """
    if data is None:
        raise ConfigError(_missing(section))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # unknown keys first
        raise ConfigError(_one_line(cls, data, section, first)) from None


_LISTED = "(the repository's params.yaml lists them all)"


def _missing(key: str) -> str:
    return f"params: {key} is missing or null; give it its keys {_LISTED}"


def _one_line(cls: type[Section], data: Any, section: str, error: dict[str, Any]) -> str:
    """pydantic's ``error`` as ``params: <key> = <value> is not allowed; expected <what is>``."""
    loc, kind = error["loc"], error["type"]
    if kind == "not_allowed":
        loc = (*loc, error["ctx"]["field"])
    if not loc:
        return f"params: {section} = {data!r} is not allowed; expected a mapping of keys to values"
    key, parent, model, info, value = section, cls, cls, None, data
    for name in loc:  # down the nested sections; a list item or a union member names its whole field
        if model is None or not isinstance(name, str):
            break
        key, parent, info = f"{key}.{name}", model, model.model_fields.get(name)
        value = value.get(name) if isinstance(value, dict) else None
        model = info.annotation if info is not None and _is_section(info.annotation) else None
    if kind == "extra_forbidden":
        owner = key.rsplit(".", 1)[0]
        return f"params: unknown key {key}; the keys of {owner} are: {', '.join(parent.model_fields)}"
    if kind == "not_allowed":
        return f"params: {key} = {error['ctx']['value']!r} is not allowed; expected {error['ctx']['allowed']}"
    if model is not None and value is None:
        return _missing(key)
    if kind == "missing":
        return f"params: {key} is missing; give every key of {key.rsplit('.', 1)[0]} {_LISTED}"
    if info.annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    return f"params: {key} = {value!r} is not allowed; expected {_allowed(info)}"


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


_KINDS = {int: "an integer", float: "a number", str: "a non-empty string", bool: "true or false", type(None): "null"}


def _kind(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _kind(args[0])
    if origin is Literal:
        return "one of " + ", ".join(args)
    if origin in (Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    if origin is tuple:
        return f"a list of {_kind(args[0]).split(' ', 1)[1]}s"
    return "a mapping" if _is_section(tp) else _KINDS.get(tp, str(tp))


def _allowed(info: FieldInfo) -> str:
    """What field ``info`` accepts, in words: its description, else its type and bounds."""
    if info.description:
        return info.description
    b = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
    kind = _kind(info.annotation)
    lo = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    hi = ("]", b["le"]) if "le" in b else (")", b["lt"]) if "lt" in b else None
    if lo and hi:
        return f"{kind} in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    return f"{kind} {'>=' if lo[0] == '[' else '>'} {lo[1]:g}" if lo else kind


# --------------------------------------------------------------------------- data


class SyntheticConfig(Section):
    """The offline default dataset: seeded, real JPEG files, visibly different classes."""

    train_per_class: Annotated[int, Field(ge=2)]
    test_per_class: PosInt
    min_side: Annotated[int, Field(ge=32)]
    max_side: int
    classes: tuple[Text, ...]

    @model_validator(mode="after")
    def _across(self) -> SyntheticConfig:
        if self.max_side < self.min_side:
            _bad("max_side", self.max_side, f"an integer >= min_side ({self.min_side})")
        if len(self.classes) < 2:
            _bad("classes", list(self.classes), "a list of at least 2 class names")
        if len(set(self.classes)) != len(self.classes):
            _bad("classes", list(self.classes), "distinct names")
        return self


class DataConfig(Section):
    """The `data` section: where the images come from, how bad files are handled, the val share.

    `download` reads every key but `val_fraction`; `stratified_split` reads only `val_fraction`;
    `prepare` reads the image limits. An image whose header announces more than `max_image_pixels`
    or an aspect ratio beyond `max_aspect_ratio` is refused before it is decoded (a bad file to
    `download`, an error to `prepare` and `inat-cnn predict`). 50 MP, 150 MB decoded, holds any phone
    or DSLR photo (the iNaturalist ones are a few MP at most) and stays under Pillow's 89 MP
    decompression-bomb warning; beyond 10:1 the centre square the models see is a sliver of the photo.
    """

    source: Text  # synthetic | nature_12k | a path to a directory or a .zip
    url: Annotated[str, Field(pattern=r"^https?://", description="an http:// or https:// URL")]
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{64}$", description="null or 64 hex digits")]
    bad_images: Literal["skip", "fail"]
    retries: NonNegInt
    timeout_s: Annotated[Num, Field(gt=0)]
    synthetic: SyntheticConfig
    val_fraction: Annotated[Num, _between(0, 1, lo_open=True, hi_open=True)]
    max_image_pixels: PosInt
    max_aspect_ratio: Annotated[Num, Field(ge=1)]


# -------------------------------------------------------------------------- model


class PrepareConfig(Section):
    """The decode-once cache: every image as a ``side`` x ``side`` uint8 square (the centre square, resized).

    (Not ``size``: DVC leaves params keys named ``size`` or ``nfiles`` out of its run-cache hash.)"""

    side: Annotated[int, _between(16, 2048)]
    workers: PosInt  # decoding threads


class ScratchModelConfig(Section):
    """The from-scratch CNN: `blocks` x (conv -> [BN] -> activation -> 2x2 max-pool) -> dense -> output."""

    blocks: PosInt
    filters: int | tuple[int, ...]
    filter_organisation: Literal["same", "double", "half"]
    kernel_size: int | tuple[int, ...]
    activation: Activation
    dense_activation: Activation
    batch_norm: bool
    dropout: Share
    dense_units: PosInt
    input_size: int | tuple[int, ...]  # an int (square) or [height, width]

    @model_validator(mode="after")
    def _across(self) -> ScratchModelConfig:
        for name in ("filters", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                if len(value) != self.blocks:
                    _bad(name, list(value), f"an integer or a list of {self.blocks} integers (one per block)")
                if min(value) < 1:
                    _bad(name, list(value), "positive integers")
            elif value < 1:
                _bad(name, value, "a positive integer")
        size = self.input_size
        if (len(size) != 2 or min(size) < 1) if isinstance(size, tuple) else size < 1:
            _bad("input_size", list(size) if isinstance(size, tuple) else size, "a positive integer or [height, width]")
        return self

    @property
    def input_hw(self) -> tuple[int, int]:
        size = self.input_size
        return (size, size) if isinstance(size, int) else (size[0], size[1])

    def filters_per_block(self) -> tuple[int, ...]:
        if isinstance(self.filters, tuple):
            return self.filters
        factor = {"same": 1.0, "double": 2.0, "half": 0.5}[self.filter_organisation]
        return tuple(max(1, int(round(self.filters * factor**i))) for i in range(self.blocks))

    def kernel_per_block(self) -> tuple[int, ...]:
        if isinstance(self.kernel_size, tuple):
            return self.kernel_size
        return (self.kernel_size,) * self.blocks


# ----------------------------------------------------------------------- training


class TrainConfig(Section):
    """The one training loop's knobs, shared by train_scratch (`train`) and finetune (`finetune`)."""

    lr: Annotated[Num, _between(0, 10, lo_open=True, hi_open=True)]
    epochs: PosInt
    batch_size: PosInt
    optimizer: OptimizerName
    momentum: Share
    weight_decay: NonNeg
    schedule: ScheduleName  # stepped every batch, after the warm-up
    warmup_epochs: NonNegInt  # the lr rises linearly from lr / steps to lr over this many epochs' steps
    label_smoothing: Share
    augment: bool
    ema_epochs: NonNeg  # > 0: validate, keep and evaluate an exponential moving average of the weights
    # whose time constant is this many epochs (0: off)
    mixup_alpha: NonNeg  # > 0: mixup with a Beta(alpha, alpha) share per sample (0: off)
    cutmix_alpha: NonNeg  # > 0: cutmix with a Beta(alpha, alpha) share per sample (0: off)
    mix_prob: Annotated[Num, _between(0, 1)]  # the share of training images mixed when mixup or cutmix is on
    early_stop_patience: PosInt
    device: DeviceName  # auto: a CUDA GPU torch supports, else MPS, else the CPU
    # auto: bf16 where the hardware computes it natively (CUDA 8.0+, CPUs with AMX or AVX512-BF16), fp16 with
    # loss scaling on CUDA 7.x, else fp32 (core/device.py); bf16, fp16 and none (fp32) force theirs
    amp: AmpName
    channels_last: bool  # every device
    compile: bool  # torch.compile
    processes: Annotated[int, _between(1, 1024)]  # > 1: the stage relaunches itself under torchrun (DDP), one per GPU


class FinetuneConfig(TrainConfig):
    """Fine-tuning a pretrained classifier: the training knobs plus the backbone and freeze strategy."""

    arch: Text
    weights: Text  # a torchvision weights enum name, DEFAULT, or a path to a state dict
    strategy: Literal["freeze_all", "freeze_first_k", "unfreeze_all"]
    trainable_blocks: NonNegInt
    backbone_lr_factor: Annotated[Num, _between(0, 1, lo_open=True)]  # the backbone's lr = lr * factor (the head's is lr)
    head_epochs: NonNegInt  # the first epochs train the head alone; then the strategy's backbone blocks join


class EvaluateConfig(Section):
    """Test-set evaluation and figures (shared by both models)."""

    batch_size: PosInt
    grid_cols: PosInt
    guided_backprop_neurons: PosInt
    sample_index: NonNegInt  # which test image the feature maps and guided backprop use
    tta: bool  # average the predictions of each image and its mirror image


class ReportConfig(Section):
    """The HTML report (reports/index.html)."""

    samples_per_class: Annotated[int, _between(1, 20)]  # training images shown per class in the data section


class LoggingConfig(Section):
    """Experiment tracking beyond DVC: an optional W&B mirror of the per-epoch curves."""

    wandb: bool  # mirror runs to Weights & Biases: offline unless WANDB_API_KEY is set
    wandb_project: Text
    wandb_entity: Text | None
