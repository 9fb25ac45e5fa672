"""What a model sees: the square cache geometry and the batch transforms that run on the device.

Every image reaches a model in two steps:

1. :func:`square_image` (once, in the ``prepare`` stage, or per file in ``inat-cnn predict``):
   the centre square of the decoded uint8 image is cut, then resized to ``size x size`` (antialiased).
2. :class:`BatchTransform` (every batch, on the training device: the GPU when there is one):
   a box per image in that square is resampled to the model's input size with
   ``torchvision.ops.roi_align`` (bilinear; evaluation supersamples when shrinking), then colour
   jitter, the 0-255 -> [0, 1] scaling and the mean/std normalisation are applied together as one
   per-image 3x3 colour matrix plus offset (``torch.baddbmm``): one pass over the batch.

Train batches (``augment``) get a random resized crop (area 50-100 % of the square, aspect
3/4-4/3), a horizontal flip with probability 0.5 and brightness/contrast/saturation jitter of
+-20 % (applied as linear maps without clipping between them). Evaluation batches get a fixed
box: the whole square resized to the input size, or, for pretrained recipes with
``resize_size``, the centre crop that "shorter side to resize_size, centre crop input_size"
takes. Random parameters come from a CPU ``torch.Generator`` (drawn per epoch, copied to the
device once), so they are the same on CPU and GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from ..core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.2  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input; stored in every checkpoint so evaluate and predict match training.

    ``source_size`` is the side of the square images it was trained on (``prepare.side``).
    """

    input_size: tuple[int, int]  # (height, width) the model sees
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int | None = None  # pretrained recipe: shorter side to this, then centre crop
    source_size: int = 256

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            input_size=tuple(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize_size=d.get("resize_size"),
            source_size=d.get("source_size", 256),  # checkpoints from before the prepared cache
        )

    def check_source(self, what: str) -> None:
        """UserError when the cached squares are smaller than the model's input (it would see upscaled images)."""
        h, w = self.input_size
        if max(h, w) > self.source_size:
            need = max(h, w) if self.resize_size is None else max(max(h, w), self.resize_size)
            raise UserError(
                f"{what} takes {h}x{w} input but the prepared squares are {self.source_size} px; "
                f"set prepare.side to at least {need} (dvc exp run -S prepare.side={need})"
            )


def square_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): the centre square, resized to ``size`` (antialiased).

    Cropping first gives exactly the centre square, scaled the same on both axes (resizing the
    shorter side first places the window up to half a source pixel elsewhere: a mean difference of
    2.4/255 on the shared photos). It is not faster on the CPU: torch's uint8 antialiased resize
    wants a contiguous input, so a landscape crop is copied first (2592x1944: 5.3 ms instead of 3.5;
    a portrait one 1.9 instead of 3.1), small beside the 35 ms of decoding such a photo."""
    side = min(image.shape[-2:])
    return TF.resize(TF.center_crop(image, [side, side]), [size, size], antialias=True)


@dataclass(frozen=True)
class AugmentDraws:
    """The random draws of N training images: crop boxes (x1, y1, x2, y2; x1 > x2 means mirrored)
    and colour factors (brightness, contrast, saturation)."""

    boxes: torch.Tensor  # (N, 4) float32
    jitter: torch.Tensor  # (N, 3) float32

    def to(self, device: torch.device) -> "AugmentDraws":
        """On ``device`` with one copy each (non-blocking from pinned memory on CUDA; none on the CPU)."""
        if device.type != "cuda":
            return AugmentDraws(self.boxes.to(device), self.jitter.to(device))
        return AugmentDraws(*(t.pin_memory().to(device, non_blocking=True) for t in (self.boxes, self.jitter)))

    def __getitem__(self, index: slice) -> "AugmentDraws":
        return AugmentDraws(self.boxes[index], self.jitter[index])


class BatchTransform:
    """uint8 (N, 3, S, S) squares on any device -> normalised float (N, 3, H, W) model input.

    Augmentation parameters are drawn on the CPU (:meth:`draw`, a whole epoch at once), copied
    to the device once, and sliced per batch: a step copies nothing from the host, so the host
    never waits for the GPU between steps.
    """

    def __init__(self, pre: Preprocessing, *, augment: bool) -> None:
        self.pre = pre
        self.augment = augment
        self.out_hw = pre.input_size
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def eval_box(self) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) in the S x S square of the deterministic view."""
        s = self.pre.source_size
        h, w = self.out_hw
        if self.pre.resize_size is None:
            return 0.0, 0.0, float(s), float(s)
        bh, bw = s * h / self.pre.resize_size, s * w / self.pre.resize_size
        y0, x0 = round((s - bh) / 2), round((s - bw) / 2)  # torchvision's CenterCrop rounding
        return float(x0), float(y0), x0 + bw, y0 + bh

    def draw(self, n: int, generator: torch.Generator) -> AugmentDraws:
        """Draws for ``n`` images: random resized crop (area share CROP_SCALE, aspect CROP_RATIO),
        a mirror with probability 0.5 (the box's x ends swapped), colour factors in 1 +- JITTER."""
        s = float(self.pre.source_size)
        u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
        area = s * s * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0])
        log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        bw = torch.sqrt(area * ratio).clamp(max=s)
        bh = torch.sqrt(area / ratio).clamp(max=s)
        x0 = (s - bw) * u[:, 2]
        y0 = (s - bh) * u[:, 3]
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1).float()
        flip = u[:, 4] < 0.5  # a box from right to left samples the mirror image: the flip costs nothing
        boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]
        jitter = 1 - JITTER + 2 * JITTER * torch.rand(n, 3, generator=generator)
        return AugmentDraws(boxes, jitter)

    def constants(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """1/std, mean, luma weights and the evaluation box on ``device`` (copied once per device)."""
        if device not in self._constants:
            values = (1.0 / torch.tensor(self.pre.std), torch.tensor(self.pre.mean), torch.tensor(GRAY_WEIGHTS),
                      torch.tensor(self.eval_box()))
            self._constants[device] = tuple(v.to(device) for v in values)
        return self._constants[device]

    def __call__(self, images: torch.Tensor, draws: AugmentDraws | None = None) -> torch.Tensor:
        """Transform a batch: with ``draws`` (on the batch's device) the augmented view, else the evaluation view.

        Colour (brightness b, contrast c, saturation s; composed without clipping between them)
        is linear in the pixels: jittered = c b (s I + (1 - s) 1 g^T) x + (1 - c) b mean(g^T x),
        g the luma weights. Scaling by 1/255 and the mean/std normalisation fold into the same
        per-image 3x3 matrix and offset, applied with one ``torch.baddbmm``.
        """
        n, device = images.shape[0], images.device
        inv_std, mean, gray, eval_box = self.constants(device)
        boxes = eval_box.expand(n, 4) if draws is None else draws.boxes
        rois = torch.cat([torch.arange(n, device=device, dtype=boxes.dtype)[:, None], boxes], dim=1)
        # bilinear samples averaged per output pixel: for train crops round(S / input) squared (1 for
        # 256 -> 224, 4 x 4 for 256 -> 64: antialiased, at a fixed cost); evaluation adapts per box
        supersample = -1 if draws is None else max(1, round(self.pre.source_size / min(self.out_hw)))
        flat = roi_align(images.float(), rois, self.out_hw, spatial_scale=1.0, sampling_ratio=supersample, aligned=True).flatten(2)
        scale = inv_std / 255.0
        if draws is None:
            out = torch.addcmul((-mean * inv_std)[None, :, None], flat, scale[None, :, None])
            return out.view(n, 3, *self.out_hw)
        b, c, s = draws.jitter.unbind(1)
        eye = torch.eye(3, device=device)
        saturation = s[:, None, None] * eye + (1 - s)[:, None, None] * gray.expand(3, 3)  # rows: luma weights
        matrix = (c * b)[:, None, None] * saturation * scale[None, :, None]
        mean_gray = (flat.mean(2) @ gray) / 255.0  # (N,)
        offset = ((1 - c) * b * mean_gray)[:, None] * inv_std[None, :] - (mean * inv_std)[None, :]
        return torch.baddbmm(offset[:, :, None], matrix, flat).view(n, 3, *self.out_hw)
