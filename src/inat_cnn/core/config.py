"""Typed configuration: one frozen dataclass per params.yaml section.

The library never reads params.yaml; stage scripts do, and turn each section into one of
these objects with :func:`from_dict`, which checks every key before any work starts:
unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
key (``train.lr``), the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .errors import ConfigError

NATURE_12K_URL = "https://storage.googleapis.com/wandb_datasets/nature_12K.zip"

ACTIVATIONS = ("relu", "gelu", "silu", "mish", "leaky_relu", "elu", "tanh", "selu", "sigmoid")
OPTIMIZERS = ("adam", "adamw", "sgd")


def _fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params: {key} = {value!r} is not allowed; expected {allowed}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Return ``value`` checked against annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        _fail(key, value, _type_name(tp))
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        _fail(key, value, "one of " + _type_name(tp))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            _fail(key, value, _type_name(tp))
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is type(None):
        if value is None:
            return None
        _fail(key, value, "null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(key, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-3" (no dot) as a string: accept it.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        _fail(key, value, "a number")
    if tp is str:
        if isinstance(value, str) and value:
            return value
        _fail(key, value, "a non-empty string")
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Any, section: str) -> T:
    """Build dataclass ``cls`` from the params mapping ``data`` of section ``section``.

    A section left out or null (``params.get`` gives None for both) is refused, never read as "all
    defaults": the code's defaults are not the shipped params.yaml's (6 epochs, no warm-up ...), and a
    run on them would look like a run on the file's values. A key left out of a present section
    takes its default.
    """
    if data is None:
        raise ConfigError(
            f"params: {section} is missing or null; give it its keys (the repository's params.yaml lists them all)"
        )
    if not isinstance(data, dict):
        _fail(section, data, "a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"params: unknown key {section}.{unknown[0]}; the keys of {section} are: {', '.join(names)}"
        )
    kwargs = {name: _convert(hints[name], data[name], f"{section}.{name}") for name in names if name in data}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(section)
    return obj


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        _fail(key, value, allowed)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SyntheticConfig:
    """The offline default dataset: seeded, real JPEG files, 10 visibly different classes."""

    train_per_class: int = 40
    test_per_class: int = 10
    min_side: int = 160
    max_side: int = 320
    classes: list[str] = (
        "Amphibia", "Animalia", "Arachnida", "Aves", "Fungi",
        "Insecta", "Mammalia", "Mollusca", "Plantae", "Reptilia",
    )  # fmt: skip

    def validate(self, s: str) -> None:
        _check(self.train_per_class >= 2, f"{s}.train_per_class", self.train_per_class, "an integer >= 2")
        _check(self.test_per_class >= 1, f"{s}.test_per_class", self.test_per_class, "an integer >= 1")
        _check(self.min_side >= 32, f"{s}.min_side", self.min_side, "an integer >= 32")
        _check(self.max_side >= self.min_side, f"{s}.max_side", self.max_side, f"an integer >= min_side ({self.min_side})")
        _check(len(self.classes) >= 2, f"{s}.classes", self.classes, "a list of at least 2 class names")
        _check(len(set(self.classes)) == len(self.classes), f"{s}.classes", self.classes, "distinct names")


@dataclass(frozen=True)
class DataConfig:
    """The `data` section: where the images come from, how bad files are handled, the val share.

    `download` reads every key but `val_fraction`; `stratified_split` reads only `val_fraction`;
    `prepare` reads the image limits. An image whose header announces more than `max_image_pixels`
    or an aspect ratio beyond `max_aspect_ratio` is refused before it is decoded (a bad file to
    `download`, an error to `prepare` and `inat-cnn predict`). 50 MP, 150 MB decoded, holds any phone
    or DSLR photo (the iNaturalist ones are a few MP at most) and stays under Pillow's 89 MP
    decompression-bomb warning; beyond 10:1 the centre square the models see is a sliver of the photo.
    """

    source: str = "synthetic"  # synthetic | nature_12k | a path to a directory or a .zip
    url: str = NATURE_12K_URL
    sha256: str | None = None
    bad_images: Literal["skip", "fail"] = "skip"
    retries: int = 5
    timeout_s: float = 60.0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    val_fraction: float = 0.2
    max_image_pixels: int = 50_000_000
    max_aspect_ratio: float = 10.0

    def validate(self, s: str) -> None:
        _check(0.0 < self.val_fraction < 1.0, f"{s}.val_fraction", self.val_fraction, "a number in (0, 1)")
        if self.sha256 is not None:
            ok = len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256.lower())
            _check(ok, f"{s}.sha256", self.sha256, "null or 64 hex digits")
        _check(self.url.startswith(("http://", "https://")), f"{s}.url", self.url, "an http:// or https:// URL")
        _check(self.retries >= 0, f"{s}.retries", self.retries, "an integer >= 0")
        _check(self.timeout_s > 0, f"{s}.timeout_s", self.timeout_s, "a number > 0")
        _check(self.max_image_pixels >= 1, f"{s}.max_image_pixels", self.max_image_pixels, "an integer >= 1")
        _check(self.max_aspect_ratio >= 1.0, f"{s}.max_aspect_ratio", self.max_aspect_ratio, "a number >= 1")


# -------------------------------------------------------------------------- model


@dataclass(frozen=True)
class PrepareConfig:
    """The decode-once cache: every image as a ``side`` x ``side`` uint8 square (the centre square, resized).

    (Not ``size``: DVC leaves params keys named ``size`` or ``nfiles`` out of its run-cache hash.)"""

    side: int = 256
    workers: int = 2  # decoding threads

    def validate(self, s: str) -> None:
        _check(16 <= self.side <= 2048, f"{s}.side", self.side, "an integer in [16, 2048]")
        _check(self.workers >= 1, f"{s}.workers", self.workers, "an integer >= 1")


@dataclass(frozen=True)
class ScratchModelConfig:
    """The from-scratch CNN: `blocks` x (conv -> [BN] -> activation -> 2x2 max-pool) -> dense -> output."""

    blocks: int = 5
    filters: int | list[int] = 32
    filter_organisation: Literal["same", "double", "half"] = "same"
    kernel_size: int | list[int] = 3
    activation: str = "relu"
    dense_activation: str = "relu"
    batch_norm: bool = True
    dropout: float = 0.3
    dense_units: int = 256
    input_size: int | list[int] = 224  # an int (square) or [height, width]

    def validate(self, s: str) -> None:
        _check(self.blocks >= 1, f"{s}.blocks", self.blocks, "an integer >= 1")
        for name in ("filters", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                _check(len(value) == self.blocks, f"{s}.{name}", list(value), f"an integer or a list of {self.blocks} integers (one per block)")
                _check(all(v >= 1 for v in value), f"{s}.{name}", list(value), "positive integers")
            else:
                _check(value >= 1, f"{s}.{name}", value, "a positive integer")
        for name in ("activation", "dense_activation"):
            value = getattr(self, name)
            _check(value in ACTIVATIONS, f"{s}.{name}", value, "one of " + ", ".join(ACTIVATIONS))
        _check(0.0 <= self.dropout < 1.0, f"{s}.dropout", self.dropout, "a number in [0, 1)")
        _check(self.dense_units >= 1, f"{s}.dense_units", self.dense_units, "a positive integer")
        size = self.input_size
        if isinstance(size, tuple):
            _check(len(size) == 2 and min(size) >= 1, f"{s}.input_size", list(size), "a positive integer or [height, width]")
        else:
            _check(size >= 1, f"{s}.input_size", size, "a positive integer or [height, width]")

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


@dataclass(frozen=True)
class TrainConfig:
    """The one training loop's knobs, shared by train_scratch (`train`) and finetune (`finetune`)."""

    lr: float = 1e-3
    epochs: int = 6
    batch_size: int = 32
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "none"] = "cosine"  # stepped every batch, after the warm-up
    warmup_epochs: int = 0  # the lr rises linearly from lr / steps to lr over this many epochs' steps
    label_smoothing: float = 0.0
    augment: bool = True
    ema_epochs: float = 0.0  # > 0: validate, keep and evaluate an exponential moving average of the weights
    # whose time constant is this many epochs (0: off)
    mixup_alpha: float = 0.0  # > 0: mixup with a Beta(alpha, alpha) share per sample (0: off)
    cutmix_alpha: float = 0.0  # > 0: cutmix with a Beta(alpha, alpha) share per sample (0: off)
    mix_prob: float = 1.0  # the share of training images mixed when mixup or cutmix is on
    early_stop_patience: int = 5
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: a CUDA GPU torch supports, else MPS, else the CPU
    # auto: bf16 where the hardware computes it natively (CUDA 8.0+, CPUs with AMX or AVX512-BF16), fp16 with
    # loss scaling on CUDA 7.x, else fp32 (core/device.py); bf16, fp16 and none (fp32) force theirs
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    channels_last: bool = True  # every device
    compile: bool = False  # torch.compile
    processes: int = 1  # > 1: the stage relaunches itself under torchrun (DistributedDataParallel), one per GPU

    def validate(self, s: str) -> None:
        _check(0.0 < self.lr < 10.0, f"{s}.lr", self.lr, "a number in (0, 10)")
        _check(1 <= self.processes <= 1024, f"{s}.processes", self.processes, "an integer >= 1 (1: one process, no torchrun)")
        _check(self.epochs >= 1, f"{s}.epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, f"{s}.batch_size", self.batch_size, "an integer >= 1")
        _check(self.optimizer in OPTIMIZERS, f"{s}.optimizer", self.optimizer, "one of " + ", ".join(OPTIMIZERS))
        _check(0.0 <= self.momentum < 1.0, f"{s}.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0.0, f"{s}.weight_decay", self.weight_decay, "a number >= 0")
        _check(0.0 <= self.label_smoothing < 1.0, f"{s}.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _check(self.warmup_epochs >= 0, f"{s}.warmup_epochs", self.warmup_epochs, "an integer >= 0")
        _check(self.ema_epochs >= 0.0, f"{s}.ema_epochs", self.ema_epochs, "a number >= 0 (0: no moving average)")
        for name in ("mixup_alpha", "cutmix_alpha"):
            _check(getattr(self, name) >= 0.0, f"{s}.{name}", getattr(self, name), "a number >= 0 (0: off)")
        _check(0.0 <= self.mix_prob <= 1.0, f"{s}.mix_prob", self.mix_prob, "a number in [0, 1]")
        _check(self.early_stop_patience >= 1, f"{s}.early_stop_patience", self.early_stop_patience, "an integer >= 1")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Fine-tuning a pretrained classifier: the training knobs plus the backbone and freeze strategy."""

    lr: float = 1e-3
    epochs: int = 3
    arch: str = "efficientnet_lite0"
    weights: str = "DEFAULT"  # a torchvision weights enum name, DEFAULT, or a path to a state dict
    strategy: Literal["freeze_all", "freeze_first_k", "unfreeze_all"] = "freeze_first_k"
    trainable_blocks: int = 2
    backbone_lr_factor: float = 1.0  # the backbone's lr = lr * factor (the head's is lr)
    head_epochs: int = 0  # the first epochs train the head alone; then the strategy's backbone blocks join

    def validate(self, s: str) -> None:
        super().validate(s)
        _check(self.trainable_blocks >= 0, f"{s}.trainable_blocks", self.trainable_blocks, "an integer >= 0")
        _check(0.0 < self.backbone_lr_factor <= 1.0, f"{s}.backbone_lr_factor", self.backbone_lr_factor, "a number in (0, 1]")
        _check(0 <= self.head_epochs, f"{s}.head_epochs", self.head_epochs, "an integer >= 0")


@dataclass(frozen=True)
class EvaluateConfig:
    """Test-set evaluation and figures (shared by both models)."""

    batch_size: int = 64
    grid_cols: int = 3
    guided_backprop_neurons: int = 10
    sample_index: int = 0  # which test image the feature maps and guided backprop use
    tta: bool = False  # average the predictions of each image and its mirror image

    def validate(self, s: str) -> None:
        _check(self.batch_size >= 1, f"{s}.batch_size", self.batch_size, "an integer >= 1")
        _check(self.grid_cols >= 1, f"{s}.grid_cols", self.grid_cols, "an integer >= 1")
        _check(self.guided_backprop_neurons >= 1, f"{s}.guided_backprop_neurons", self.guided_backprop_neurons, "an integer >= 1")
        _check(self.sample_index >= 0, f"{s}.sample_index", self.sample_index, "an integer >= 0")


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report (reports/index.html)."""

    samples_per_class: int = 3  # training images shown per class in the data section

    def validate(self, s: str) -> None:
        _check(1 <= self.samples_per_class <= 20, f"{s}.samples_per_class", self.samples_per_class, "an integer in [1, 20]")


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment tracking beyond DVC: an optional W&B mirror of the per-epoch curves."""

    wandb: bool = False  # mirror runs to Weights & Biases: offline unless WANDB_API_KEY is set
    wandb_project: str = "inat-cnn"
    wandb_entity: str | None = None
