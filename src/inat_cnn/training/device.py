"""Which device to run on, and seeding every random number generator at once."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..core.errors import FieldError

DEVICES = ("auto", "cpu", "cuda")


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu`` or ``cuda`` (FieldError ``device`` if absent)."""
    if name not in DEVICES:
        raise FieldError("device", name, f"is not allowed; expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise FieldError("device", name, "is not allowed: no CUDA device is available here; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
