r"""Size and cost of the from-scratch CNN, from the config arithmetic alone (no model is built).

The network (see :class:`~inat_cnn.models.scratch.ScratchCNN`): ``blocks`` times
conv(k×k, "same" padding) → [BN] → activation → 2×2 max-pool, then
flatten → dense(n) → activation → dropout → dense(c).

**FLOP convention.** ``FLOPs = 2 × MACs`` of the convolutions and linear layers only: one
multiply-add counts as 2 FLOPs, and bias adds, batch norm, activations, padding, pooling and
dropout count 0. This is exactly what :class:`torch.utils.flop_counter.FlopCounterMode`
counts (``aten.convolution``: 2·B·C_out·C_in·k²·H_out·W_out; ``aten.addmm``/``mm``: 2·B·in·out;
bias, ``batch_norm``, ``relu``, ``max_pool2d``, ``constant_pad_nd`` … have no FLOP formula
there), so the two agree to the FLOP; the tests check it. Counting them too (about 2 for BN,
1 for the activation and 0.75 for the 2×2 pool per conv output element) would add about 2 %
for the default network (8.0 M on top of 394.6 M FLOPs).

**Parameters.** A convolution followed by batch norm has **no bias**: BN subtracts the
per-channel mean right after, so a conv bias would be cancelled and BN's shift β does its
job. So each block carries C_out extra parameters without BN (the conv bias) and 2·C_out
with BN (γ and β; the running mean and variance are buffers, not parameters).

**Closed form** (m filters of k×k in every block, n dense units, c classes, input H×W with
3 channels, B blocks, H' = ⌊H/2^B⌋, W' = ⌊W/2^B⌋ — B floor-halvings equal one floor by 2^B):

.. math::

    \text{params} = 3k^2m + (B-1)k^2m^2 + \beta B m + m H' W' n + n + n c + c,
    \qquad \beta = 1 \text{ (conv bias) without BN},\ 2 \text{ (BN } \gamma, \beta \text{) with BN}

    \text{FLOPs} = 2\Big[k^2 m \Big(3HW + m\sum_{i=1}^{B-1}\lfloor H/2^i\rfloor\lfloor W/2^i\rfloor\Big)
                   + m H' W' n + n c\Big]

:func:`exact_params` and :func:`exact_flops` handle any config (per-block filters and
kernels, BN on or off, non-square input) by summing :func:`layer_table`.
"""

from __future__ import annotations

from typing import Any

from ..core.config import ScratchModelConfig
from ..core.errors import ConfigError

IN_CHANNELS = 3

FLOP_CONVENTION = (
    "FLOPs = 2 x multiply-adds (MACs) of the convolutions and linear layers only; bias adds, "
    "batch norm, activations, padding, pooling and dropout count 0 "
    "(the same count as torch.utils.flop_counter.FlopCounterMode)"
)

# The closed forms of :func:`closed_form_params` and :func:`closed_form_flops`, as printed text
CLOSED_FORM_SYMBOLS = (
    "m filters of k×k in every block, B blocks, n dense units, c classes, C = 3 input channels, "
    "input H×W, H′ = ⌊H/2^B⌋, W′ = ⌊W/2^B⌋; β = 2 with batch norm (γ, β), 1 without (the conv bias)"
)
PARAMS_FORMULA = "params = C·k²·m + (B−1)·k²·m² + β·B·m + m·H′·W′·n + n + n·c + c"
FLOPS_FORMULA = "FLOPs = 2·[k²·m·(C·H·W + m·Σ_{i=1}^{B−1} ⌊H/2^i⌋·⌊W/2^i⌋) + m·H′·W′·n + n·c]"


def check_num_classes(num_classes: int) -> None:
    """Raise ConfigError unless there are at least 2 classes to tell apart."""
    if num_classes < 2:
        raise ConfigError(
            f"num_classes = {num_classes} is not allowed; a classifier needs at least 2 classes "
            "(one folder per class in the training data)"
        )


def same_padding(kernel: int) -> tuple[int, int]:
    """(before, after) zero padding that keeps a stride-1 k×k conv's output the input's size.

    Odd k pads (k−1)/2 on both sides; even k pads one more after than before, as PyTorch's
    ``padding="same"`` does.
    """
    before = (kernel - 1) // 2
    return before, kernel - 1 - before


def block_output_hw(cfg: ScratchModelConfig) -> list[tuple[int, int]]:
    """Spatial size after each block's 2×2 max-pool (H → ⌊H/2⌋); ConfigError if one reaches 0."""
    height, width = cfg.input_hw
    sizes = []
    for block in range(1, cfg.blocks + 1):
        height, width = height // 2, width // 2
        if height < 1 or width < 1:
            most = min(cfg.input_hw).bit_length() - 1
            raise ConfigError(
                f"params: model.blocks = {cfg.blocks} is not allowed: its 2x2 max-pools shrink "
                f"model.input_size {list(cfg.input_hw)} below 1x1 after block {block}; "
                f"use at most {most} blocks or a larger model.input_size"
            )
        sizes.append((height, width))
    return sizes


def flatten_features(cfg: ScratchModelConfig) -> int:
    """Length of the flattened feature map that enters the dense layer."""
    height, width = block_output_hw(cfg)[-1]
    return cfg.filters_per_block()[-1] * height * width


def _row(layer: str, kind: str, shape: tuple[int, ...], params: int = 0, macs: int = 0) -> dict[str, Any]:
    return {"layer": layer, "type": kind, "output_shape": list(shape), "params": params, "flops": 2 * macs}


def layer_table(cfg: ScratchModelConfig, num_classes: int) -> list[dict[str, Any]]:
    """One row per leaf module, named as in ``ScratchCNN.named_modules()``, for one image.

    Keys: layer, type, output_shape (C, H, W or features), params, flops.
    """
    check_num_classes(num_classes)
    from .activations import activation_class  # here: the report reads the closed forms without torch

    act = activation_class(cfg.activation, "model.activation").__name__
    dense_act = activation_class(cfg.dense_activation, "model.dense_activation").__name__
    rows = []
    c_in, (height, width) = IN_CHANNELS, cfg.input_hw
    for i, (c_out, k, pooled) in enumerate(zip(cfg.filters_per_block(), cfg.kernel_per_block(), block_output_hw(cfg))):
        name = f"features.{i}"
        before, after = same_padding(k)
        if before != after:
            rows.append(_row(f"{name}.pad", "ZeroPad2d", (c_in, height + k - 1, width + k - 1)))
        shape = (c_out, height, width)
        conv_params = k * k * c_in * c_out + (0 if cfg.batch_norm else c_out)
        rows.append(_row(f"{name}.conv", "Conv2d", shape, conv_params, k * k * c_in * c_out * height * width))
        if cfg.batch_norm:
            rows.append(_row(f"{name}.bn", "BatchNorm2d", shape, 2 * c_out))
        rows.append(_row(f"{name}.act", act, shape))
        height, width = pooled
        rows.append(_row(f"{name}.pool", "MaxPool2d", (c_out, height, width)))
        c_in = c_out
    flat, n, c = flatten_features(cfg), cfg.dense_units, num_classes
    rows += [
        _row("classifier.flatten", "Flatten", (flat,)),
        _row("classifier.dense", "Linear", (n,), flat * n + n, flat * n),
        _row("classifier.act", dense_act, (n,)),
        _row("classifier.dropout", "Dropout", (n,)),
        _row("classifier.out", "Linear", (c,), n * c + c, n * c),
    ]
    return rows


def exact_params(cfg: ScratchModelConfig, num_classes: int) -> int:
    """Number of parameters of ``ScratchCNN(cfg, num_classes)``, all of them trainable."""
    return sum(row["params"] for row in layer_table(cfg, num_classes))


def exact_flops(cfg: ScratchModelConfig, num_classes: int) -> int:
    """Forward FLOPs for one image, in the convention of :data:`FLOP_CONVENTION`."""
    return sum(row["flops"] for row in layer_table(cfg, num_classes))


def _final_hw(input_hw: int | tuple[int, int], blocks: int) -> tuple[int, int, int, int]:
    height, width = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    if min(height, width) >> blocks < 1:
        raise ValueError(f"{blocks} max-pools shrink a {height}x{width} input below 1x1")
    return height, width, height >> blocks, width >> blocks


def closed_form_params(
    m: int, k: int, n: int, input_hw: int | tuple[int, int], num_classes: int,
    blocks: int = 5, in_channels: int = IN_CHANNELS, batch_norm: bool = True,
) -> int:  # fmt: skip
    r"""params = C·k²·m + (B−1)·k²·m² + β·B·m + m·H'·W'·n + n + n·c + c (β = 2 with BN, else 1).

    C = in_channels; see the module docstring for the derivation.
    """
    _, _, h_out, w_out = _final_hw(input_hw, blocks)
    beta = 2 if batch_norm else 1
    c = num_classes
    return in_channels * k * k * m + (blocks - 1) * k * k * m * m + beta * blocks * m + m * h_out * w_out * n + n + n * c + c


def closed_form_flops(
    m: int, k: int, n: int, input_hw: int | tuple[int, int], num_classes: int,
    blocks: int = 5, in_channels: int = IN_CHANNELS, batch_norm: bool = True,
) -> int:  # fmt: skip
    r"""FLOPs = 2·[k²·m·(C·H·W + m·Σ_{i=1}^{B−1} ⌊H/2^i⌋·⌊W/2^i⌋) + m·H'·W'·n + n·c].

    Independent of ``batch_norm`` (BN, like bias adds, is not counted); C = in_channels.
    """
    height, width, h_out, w_out = _final_hw(input_hw, blocks)
    inner = sum((height >> i) * (width >> i) for i in range(1, blocks))
    return 2 * (k * k * m * (in_channels * height * width + m * inner) + m * h_out * w_out * n + n * num_classes)


def size_report(cfg: ScratchModelConfig, num_classes: int) -> dict[str, Any]:
    """The figures for metrics/model_scratch.json."""
    rows = layer_table(cfg, num_classes)
    params = sum(row["params"] for row in rows)
    flops = sum(row["flops"] for row in rows)
    return {
        "params": params,
        "trainable_params": params,
        "flops_per_image": flops,
        "macs_per_image": flops // 2,
        "flop_convention": FLOP_CONVENTION,
        "input_size": list(cfg.input_hw),
        "num_classes": num_classes,
        "layers": rows,
    }


def _shape(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def format_layer_table(rows: list[dict[str, Any]]) -> str:
    """A printable, aligned table of :func:`layer_table` rows with a totals line."""
    header = ("layer", "type", "output", "params", "FLOPs")
    body = [(r["layer"], r["type"], _shape(r["output_shape"]), f"{r['params']:,}", f"{r['flops']:,}") for r in rows]
    total = ("total", "", "", f"{sum(r['params'] for r in rows):,}", f"{sum(r['flops'] for r in rows):,}")
    widths = [max(len(line[i]) for line in [header, *body, total]) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        left = [cell.ljust(w) for cell, w in zip(line[:3], widths)]
        right = [cell.rjust(w) for cell, w in zip(line[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(total)])


def measured_flops(model: Any, input_hw: tuple[int, int], in_channels: int = IN_CHANNELS) -> int:
    """Forward FLOPs of any model for one image, counted by FlopCounterMode (same convention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, *input_hw))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
