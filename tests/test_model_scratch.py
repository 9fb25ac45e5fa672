"""The from-scratch CNN: structure, closed-form parameter and FLOP counts, config errors.

Parameter and FLOP checks build the model on the meta device (no memory, no compute), so
even 224 px configs cost nothing; real forward passes use small inputs.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import PARAMS, config

from inat_cnn.core.config import ACTIVATIONS, ScratchModelConfig
from inat_cnn.core.errors import ConfigError
from inat_cnn.models.activations import ACTIVATION_TYPES, is_activation, make_activation
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.models.size import (
    closed_form_flops,
    closed_form_params,
    exact_flops,
    exact_params,
    format_layer_table,
    layer_table,
    size_report,
)


def model_cfg(**params: Any) -> ScratchModelConfig:
    """params.yaml's model at 224 px (the sizes below are worked out for it) with ``params``."""
    return config(ScratchModelConfig, "model", **{"input_size": 224, **params})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(cfg: ScratchModelConfig, num_classes: int) -> ScratchCNN:
    with torch.device("meta"):
        return ScratchCNN(cfg, num_classes)


def counted_flops(model: ScratchCNN, batch: int) -> int:
    x = torch.empty(batch, 3, *model.input_hw, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


# (config, num_classes, closed-form arguments (m, k, n) or None for a non-uniform config)
Case = tuple[ScratchModelConfig, int, tuple[int, int, int] | None]

# name: (model params, num_classes, closed-form (m, k, n) or None)
CONFIGS = {
    "default": ({}, 10, (32, 3, 256)),
    "m64": ({"filters": 64}, 10, (64, 3, 256)),
    "k2-nonsquare": ({"kernel_size": 2, "input_size": [96, 128]}, 5, (32, 2, 256)),
    "k4-no-bn": ({"kernel_size": 4, "batch_norm": False, "input_size": 64}, 10, (32, 4, 256)),
    "k5-160x224": ({"kernel_size": 5, "filters": 16, "dense_units": 64, "input_size": [160, 224]}, 5, (16, 5, 64)),
    "4-blocks-no-bn": ({"blocks": 4, "batch_norm": False, "input_size": [40, 56]}, 5, (32, 3, 256)),
    "double": ({"filters": 8, "filter_organisation": "double", "input_size": 64}, 10, None),
    "half-no-bn": ({"filters": 64, "filter_organisation": "half", "batch_norm": False}, 5, None),
    "lists": (
        {"blocks": 4, "filters": [8, 16, 24, 32], "kernel_size": [3, 2, 5, 4], "input_size": [96, 128]},
        5,
        None,
    ),
    "odd-size-even-k": ({"kernel_size": [2, 3, 4, 5, 2], "input_size": [37, 50], "batch_norm": False}, 5, None),
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def case(request: pytest.FixtureRequest) -> Case:
    params, num_classes, closed = CONFIGS[request.param]
    return model_cfg(**params), num_classes, closed


def closed_form(formula: Callable[..., int], case: Case) -> int | None:
    """``formula`` (closed_form_params or _flops) for a uniform config; None for the others."""
    cfg, num_classes, closed = case
    if closed is None:
        return None
    m, k, n = closed
    return formula(m, k, n, cfg.input_hw, num_classes, blocks=cfg.blocks, batch_norm=cfg.batch_norm)


def test_params_match_model(case: Case) -> None:
    cfg, num_classes, _ = case
    actual = n_params(meta_model(cfg, num_classes))
    assert exact_params(cfg, num_classes) == actual
    assert size_report(cfg, num_classes)["params"] == actual
    assert closed_form(closed_form_params, case) in (None, actual)


def test_flops_match_flop_counter(case: Case) -> None:
    cfg, num_classes, _ = case
    model = meta_model(cfg, num_classes)
    flops = exact_flops(cfg, num_classes)
    assert counted_flops(model, 1) == flops
    assert counted_flops(model, 3) == 3 * flops
    assert closed_form(closed_form_flops, case) in (None, flops)


def test_layer_table_matches_model(case: Case) -> None:
    """Every leaf module has a row of the same name, type, parameter count and output shape."""
    cfg, num_classes, _ = case
    model = meta_model(cfg, num_classes)
    leaves = {name: mod for name, mod in model.named_modules() if not list(mod.children())}
    shapes: dict[str, list[int]] = {}
    for name, module in leaves.items():
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, list(out.shape[1:])))
    model(torch.empty(1, 3, *cfg.input_hw, device="meta"))

    rows = layer_table(cfg, num_classes)
    assert [row["layer"] for row in rows] == list(leaves)
    for row in rows:
        module = leaves[row["layer"]]
        assert row["type"] == type(module).__name__
        assert row["params"] == n_params(module)
        assert row["output_shape"] == shapes[row["layer"]]
    assert sum(row["params"] for row in rows) == n_params(model)


def test_default_figures() -> None:
    """The figures quoted in the docs: 442,282 params and 394.6 MFLOPs per 224 px image."""
    cfg = model_cfg()
    assert exact_params(cfg, 10) == closed_form_params(32, 3, 256, 224, 10) == 442_282
    assert exact_flops(cfg, 10) == closed_form_flops(32, 3, 256, 224, 10) == 394_589_184


@pytest.mark.filterwarnings("error")  # even kernels must not hit padding="same"'s warning
def test_forward_shape_and_block_sizes() -> None:
    """Convs keep the size (odd and even kernels); each block floor-halves it."""
    cfg = model_cfg(kernel_size=[2, 3, 4, 5, 2], filters=4, dense_units=8, input_size=[37, 50])
    model = ScratchCNN(cfg, 5)
    blocks: list[tuple[torch.Size, torch.Size]] = []  # (input, output) of each block
    convs: list[torch.Size] = []
    for block in model.features:
        block.register_forward_hook(lambda _m, inp, out: blocks.append((inp[0].shape, out.shape)))
        block.conv.register_forward_hook(lambda _m, _inp, out: convs.append(out.shape))
    assert model(torch.randn(2, 3, 37, 50)).shape == (2, 5)
    for (block_in, block_out), conv_out, c in zip(blocks, convs, cfg.filters_per_block(), strict=True):
        assert tuple(conv_out) == (2, c, *block_in[2:])
        assert tuple(block_out) == (2, c, block_in[2] // 2, block_in[3] // 2)
    assert tuple(blocks[-1][1][2:]) == (1, 1)  # 37 -> 18 -> 9 -> 4 -> 2 -> 1; 50 -> ... -> 1


def test_structure_and_helpers() -> None:
    with_bn = ScratchCNN(model_cfg(filters=[4, 8], blocks=2, input_size=16, dense_units=8), 3)
    assert with_bn.first_conv() is with_bn.features[0].conv
    assert with_bn.first_conv().in_channels == 3 and with_bn.first_conv().bias is None
    assert with_bn.last_conv_block() is with_bn.features[-1]
    assert with_bn.last_conv_block()(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    assert [type(m) for m in with_bn.classifier] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    no_bn = ScratchCNN(model_cfg(blocks=2, input_size=16, batch_norm=False, activation="gelu"), 3)
    assert no_bn.first_conv().bias is not None and not hasattr(no_bn.features[0], "bn")
    assert isinstance(no_bn.features[1].act, nn.GELU)


def test_too_many_pools_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.blocks = 9 .*model\.input_size \[224, 224\].*after block 8.*at most 7"):
        ScratchCNN(model_cfg(blocks=9), 10)
    with pytest.raises(ConfigError, match=r"model\.blocks = 5 .*\[256, 20\].*after block 5.*at most 4"):
        exact_params(model_cfg(input_size=[256, 20]), 10)


def test_num_classes_below_two_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes = 1"):
        ScratchCNN(model_cfg(blocks=1, input_size=8), 1)


def test_activations() -> None:
    for name in ACTIVATIONS:
        layer = make_activation(name)
        assert isinstance(layer, ACTIVATION_TYPES) and is_activation(layer)
    assert make_activation("relu") is not make_activation("relu")
    assert all(is_activation(cls()) for cls in (nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU))
    assert not is_activation(nn.Conv2d(1, 1, 1))
    with pytest.raises(ConfigError, match=r"model\.dense_activation = 'swish'.*relu, gelu"):
        make_activation("swish", "model.dense_activation")
    with pytest.raises(ConfigError, match=r"model\.activation = 'swish'"):
        model_cfg(activation="swish")
    with pytest.raises(ConfigError, match=r"model\.activation = 'swish'"):
        ScratchCNN(ScratchModelConfig.model_construct(**{**PARAMS["model"], "activation": "swish"}), 10)  # not validated: still caught


def test_size_report_and_table() -> None:
    cfg = model_cfg()
    report = size_report(cfg, 10)
    assert json.loads(json.dumps(report)) == report
    assert report["macs_per_image"] * 2 == report["flops_per_image"] == exact_flops(cfg, 10)
    assert report["trainable_params"] == report["params"]
    assert report["input_size"] == [224, 224] and report["num_classes"] == 10
    text = format_layer_table(report["layers"])
    assert "features.0.conv" in text and "32x224x224" in text
    assert text.splitlines()[-1].split()[1:] == ["442,282", "394,589,184"]
