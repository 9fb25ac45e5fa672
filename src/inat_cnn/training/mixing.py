"""Mixup and cutmix on the training device, with per-sample parameters drawn once per epoch.

Each training image i of a batch is mixed with its partner, the image at the mirrored position
of the same batch (``x.flip(0)``, timm's "elementwise" mode), with its own share ``lam`` of
Beta(alpha, alpha): mixup blends the two images, cutmix pastes a box of the partner whose area is
``1 - lam`` of the image. When both are on, each image picks one of the two with probability
1/2; a share ``1 - mix_prob`` of the images is left alone. The target becomes the same mix of
the two one-hot labels (cutmix: by the box's actual pixel share), and the loss reads it as class
probabilities. Like the crop and colour draws (data/preprocessing.py), every draw is made on the
CPU for the whole epoch from a seeded generator, so a run is the same on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixDraws:
    """The draws of N training images: own share ``lam``, ``cut`` (cutmix rather than mixup) and the
    cutmix box (y0, x0, y1, x1) as fractions of the image side."""

    lam: torch.Tensor  # (N,) float32
    cut: torch.Tensor  # (N,) bool
    box: torch.Tensor  # (N, 4) float32

    def to(self, device: torch.device) -> "MixDraws":
        return MixDraws(*(t.to(device) for t in (self.lam, self.cut, self.box)))

    def __getitem__(self, index: slice) -> "MixDraws":
        return MixDraws(self.lam[index], self.cut[index], self.box[index])


class Mixer:
    """Mixup/cutmix of (images, labels) batches into (mixed images, soft targets)."""

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, mix_prob: float, num_classes: int) -> None:
        self.mixup_alpha, self.cutmix_alpha, self.mix_prob = mixup_alpha, cutmix_alpha, mix_prob
        self.num_classes = num_classes

    @property
    def enabled(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def draw(self, n: int, generator: torch.Generator) -> MixDraws:
        """Draws for ``n`` images (in the epoch's visiting order)."""
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = u[:, 0] < 0.5
        else:
            cut = torch.full((n,), self.cutmix_alpha > 0)
        lam = torch.ones(n, dtype=torch.float64)
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=generator)))
        for alpha, chosen in ((self.mixup_alpha, ~cut), (self.cutmix_alpha, cut)):
            if alpha > 0:
                lam = torch.where(chosen, torch.from_numpy(rng.beta(alpha, alpha, n)), lam)
        mixed = u[:, 1] < self.mix_prob
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        cut = cut & mixed
        side = torch.sqrt(1.0 - lam)  # a square box of area 1 - lam, centred anywhere, clipped to the image
        centre = u[:, 2:4]
        box = torch.cat([(centre - side[:, None] / 2).clamp(0, 1), (centre + side[:, None] / 2).clamp(0, 1)], dim=1)
        return MixDraws(lam.float(), cut, box.float())

    def __call__(self, x: torch.Tensor, y: torch.Tensor, draws: MixDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) images and (N,) labels -> mixed images and (N, classes) target probabilities."""
        n, _, h, w = x.shape
        rows = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h
        cols = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w
        box = draws.box
        inside = ((rows[None, :, None] >= box[:, 0, None, None]) & (rows[None, :, None] < box[:, 2, None, None])
                  & (cols[None, None, :] >= box[:, 1, None, None]) & (cols[None, None, :] < box[:, 3, None, None]))
        own = torch.where(draws.cut[:, None, None], (~inside).float(), draws.lam[:, None, None])  # (N, H, W)
        lam = torch.where(draws.cut, own.mean((1, 2)), draws.lam)  # cutmix: the box's actual pixel share
        own = own[:, None].to(x.dtype)
        one_hot = torch.nn.functional.one_hot(y, self.num_classes).float()
        target = lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot.flip(0)
        return own * x + (1 - own) * x.flip(0), target
