"""Datasets and transforms for training, evaluation and prediction.

Images are decoded with torchvision.io (libjpeg/libpng, the decoder `download` validated every
file with) into uint8 CHW tensors; transforms v2 then resize/augment and normalise. The train
split alone gets augmentation; val, test and predict share one deterministic transform built
from a :class:`Preprocessing` that is stored in every checkpoint, so a checkpoint carries its
own preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import read_file
from torchvision.transforms import v2

from ..errors import UserError
from .images import decode_rgb_bytes, list_class_dirs, list_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: resize (then centre-crop when ``resize_size`` is set) and normalise."""

    input_size: tuple[int, int]  # (height, width) the model sees
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int | None = None  # pretrained recipe: shorter side to this, then centre crop

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            input_size=tuple(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize_size=d.get("resize_size"),
        )


def eval_transform(pre: Preprocessing) -> v2.Compose:
    """Deterministic: resize (+ centre crop for pretrained recipes), scale to [0, 1], normalise."""
    if pre.resize_size is None:
        resize = [v2.Resize(list(pre.input_size), antialias=True)]
    else:
        resize = [v2.Resize(pre.resize_size, antialias=True), v2.CenterCrop(list(pre.input_size))]
    return v2.Compose([*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])


def train_transform(pre: Preprocessing, augment: bool) -> v2.Compose:
    """Train split only: random resized crop, horizontal flip and colour jitter when ``augment``."""
    if not augment:
        return eval_transform(pre)
    return v2.Compose(
        [
            v2.RandomResizedCrop(list(pre.input_size), scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre.mean, pre.std),
        ]
    )


def decode_rgb(path: str | Path) -> torch.Tensor:
    """Decode one image file to a uint8 (3, H, W) tensor (EXIF orientation applied); UserError if unreadable."""
    try:
        return decode_rgb_bytes(read_file(str(path)))
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be decoded as an image ({exc}); remove it or re-run the download stage") from exc


class ImageListDataset(Dataset):
    """(image, label) pairs from a list of (path relative to ``root``, label)."""

    def __init__(self, root: Path, items: Sequence[tuple[str, int]], transform) -> None:
        self.root = Path(root)
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def path(self, index: int) -> Path:
        return self.root / self.items[index][0]

    def raw_image(self, index: int) -> torch.Tensor:
        """The decoded uint8 image before any transform (for figures)."""
        return decode_rgb(self.path(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.raw_image(index)), self.items[index][1]


def test_items(test_dir: Path, class_names: Sequence[str]) -> list[tuple[str, int]]:
    """List the test folder in the training classes' order; the class sets must match."""
    if not test_dir.is_dir():
        raise UserError(f"{test_dir}: test folder not found; run `dvc repro download` first")
    found = list_class_dirs(test_dir)
    if sorted(found) != sorted(class_names):
        raise UserError(
            f"{test_dir}: test classes {sorted(found)} differ from the model's classes {sorted(class_names)}"
        )
    return [
        (str(p.relative_to(test_dir)), label)
        for label, name in enumerate(class_names)
        for p in list_images(test_dir / name)
    ]


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, num_workers: int, seed: int, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader whose shuffling and per-worker augmentation RNG derive from its generator alone.

    Workers are started afresh each epoch (not persistent), so reseeding ``loader.generator``
    before an epoch fixes that epoch's order and augmentations whatever came before.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=False,
    )
