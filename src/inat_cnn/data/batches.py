"""Batches from the prepared cache, straight onto the training device.

A batch is gathered by index from a split's memory-mapped uint8 array (read in ascending index
order, so reads move forward through the file, then put back in the epoch's order), copied to the device (pinned memory and a
non-blocking copy on CUDA) and handed to a :class:`~inat_cnn.data.preprocessing.BatchTransform`
that crops, flips, jitters and normalises it there, with augmentation draws made for the whole
epoch at its start and copied to the device once. On CUDA a split that fits in a quarter of the
free GPU memory is copied to the GPU once, and batches are gathered on the GPU: the host does no
per-image work at all. There are no DataLoader worker processes, so nothing holds a private copy
of the data; the operating system's page cache holds the file once.

Order: :meth:`BatchLoader.set_epoch` draws the epoch's permutation from its seed (the same on
every rank) and the augmentation parameters from (seed, rank). Under DistributedDataParallel
each rank takes every ``world_size``-th index of the permutation; with ``pad`` (training) the
permutation is first padded with its own head to a multiple of ``world_size``, as
``DistributedSampler`` does, so every rank runs the same number of steps.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .prepared import PreparedSplit
from .preprocessing import BatchTransform

DEVICE_SHARE = 0.25  # a split is kept on the GPU when it needs at most this share of the free memory


class BatchLoader:
    """Iterate (inputs, labels) batches of ``split`` on ``device``; inputs transformed by ``transform``
    (uint8 squares when ``transform`` is None).

    ``resident``: copy the whole split to ``device`` once (None: on CUDA when it fits in
    DEVICE_SHARE of the free memory). Both paths give the same batches in the same order with the
    same augmentation per image."""

    def __init__(
        self,
        split: PreparedSplit,
        batch_size: int,
        device: torch.device,
        transform: BatchTransform | None,
        *,
        shuffle: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = False,
        resident: bool | None = None,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.device = device
        self.transform = transform
        self.shuffle = shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.labels = torch.from_numpy(split.labels).to(device)
        if resident is None:
            resident = device.type == "cuda" and split.images.nbytes <= DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]
        self.images = _to_device(split.images, device) if resident else None
        self.set_epoch(0)

    def set_epoch(self, seed: int) -> None:
        """Fix this epoch's order (from ``seed``) and augmentation draws (from ``seed`` and the rank)."""
        self.seed = seed
        self.augment_generator = torch.Generator().manual_seed(seed * 1009 + self.rank)

    def order(self) -> np.ndarray:
        """This rank's indices for the epoch, in visiting order."""
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).numpy()
        else:
            order = np.arange(n)
        if self.world_size > 1:
            if self.pad and n % self.world_size:
                order = np.concatenate([order, order[: self.world_size - n % self.world_size]])
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n, world = len(self.split), self.world_size
        per_rank = -(-n // world) if self.pad else len(range(self.rank, n, world))  # = len(self.order())
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        draws = None
        if self.transform is not None and self.transform.augment:
            draws = self.transform.draw(len(order), self.augment_generator).to(self.device)  # the epoch's, at once
        on_device = _to_device(order, self.device) if self.images is not None else None
        for start in range(0, len(order), self.batch_size):
            batch = slice(start, start + self.batch_size)
            if on_device is not None:  # gathered on the GPU: nothing crosses from the host
                images, labels = self.images[on_device[batch]], self.labels[on_device[batch]]
            else:
                indices = order[batch]
                ascending = np.argsort(indices, kind="stable")  # one forward read through the memmap ...
                host = self.split.images[indices[ascending]][np.argsort(ascending)]  # ... back in the epoch's order
                images = _to_device(host, self.device)
                labels = self.labels[_to_device(indices, self.device)]
            if self.transform is not None:
                images = self.transform(images, None if draws is None else draws[batch])
            yield images, labels


def _to_device(array: np.ndarray, device: torch.device, chunk: int = 512) -> torch.Tensor:
    """A host array on ``device``: pinned, non-blocking copies on CUDA (in chunks, for a whole memmap); a plain copy
    on any other accelerator (MPS); shared, not copied, on the CPU."""
    if device.type != "cuda":
        return torch.from_numpy(array if array.flags.writeable else np.array(array)).to(device)
    out = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, device=device)
    for start in range(0, len(array), chunk):
        out[start : start + chunk].copy_(torch.from_numpy(np.array(array[start : start + chunk])).pin_memory(), non_blocking=True)
    return out
