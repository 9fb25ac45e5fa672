"""The from-scratch CNN: ``blocks`` × (conv → [BN] → activation → 2×2 max-pool) → dense → output."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from ..core.config import ScratchModelConfig
from .activations import make_activation
from .size import IN_CHANNELS, block_output_hw, check_num_classes, flatten_features, same_padding

if TYPE_CHECKING:
    from .checkpoint import ModelSpec


def conv_block(c_in: int, c_out: int, kernel: int, activation: str, batch_norm: bool) -> nn.Sequential:
    """[pad] → conv → [bn] → act → pool; the output is ⌊H/2⌋ × ⌊W/2⌋ for any kernel size.

    The conv keeps the input size ("same" padding). Odd k pads (k−1)/2 on each side inside the
    conv; even k needs one more row/column after than before, which is done by an explicit
    ``pad`` (``nn.ZeroPad2d``) layer, the same padding PyTorch's ``padding="same"`` applies
    (without its warning). With batch norm the conv has no bias: BN's shift β replaces it.
    """
    before, after = same_padding(kernel)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if before != after:
        layers["pad"] = nn.ZeroPad2d((before, after, before, after))
    layers["conv"] = nn.Conv2d(c_in, c_out, kernel, padding=before if before == after else 0, bias=not batch_norm)
    if batch_norm:
        layers["bn"] = nn.BatchNorm2d(c_out)
    layers["act"] = make_activation(activation, "model.activation")
    layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


class ScratchCNN(nn.Module):
    """The configurable CNN trained from scratch.

    ``features[i]`` is block i (submodules ``conv``, optional ``bn``/``pad``, ``act``, ``pool``);
    ``classifier`` is flatten → dense → act → dropout → out. Its parameter count and FLOPs are
    given in closed form by :mod:`inat_cnn.models.size`.
    """

    def __init__(self, cfg: ScratchModelConfig, num_classes: int) -> None:
        super().__init__()
        check_num_classes(num_classes)
        block_output_hw(cfg)  # ConfigError when the max-pools shrink the input below 1x1
        channels = (IN_CHANNELS, *cfg.filters_per_block())
        self.features = nn.Sequential(
            *(
                conv_block(c_in, c_out, k, cfg.activation, cfg.batch_norm)
                for c_in, c_out, k in zip(channels, channels[1:], cfg.kernel_per_block())
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                dense=nn.Linear(flatten_features(cfg), cfg.dense_units),
                act=make_activation(cfg.dense_activation, "model.dense_activation"),
                dropout=nn.Dropout(cfg.dropout),
                out=nn.Linear(cfg.dense_units, num_classes),
            )
        )
        self.input_hw = cfg.input_hw
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images → (B, num_classes) logits; H, W must be the configured input size."""
        return self.classifier(self.features(x))

    def first_conv(self) -> nn.Conv2d:
        """The first convolution (its weights are the first-layer filters)."""
        return self.features[0].conv

    def last_conv_block(self) -> nn.Module:
        """The last block; its output has the last block's channel count."""
        return self.features[-1]


def scratch_model(cfg: ScratchModelConfig, class_names: Sequence[str], source_size: int) -> tuple[ScratchCNN, "ModelSpec"]:
    """A freshly initialised CNN and the spec its checkpoints carry, for squares of ``source_size`` px."""
    from ..data.preprocessing import Preprocessing
    from .checkpoint import SCRATCH_ARCH, ModelSpec

    spec = ModelSpec(SCRATCH_ARCH, cfg.model_dump(), list(class_names), Preprocessing(input_size=cfg.input_hw, source_size=source_size))
    return ScratchCNN(cfg, num_classes=len(class_names)), spec
