"""Which device to run on, at which precision, and seeding every random number generator at once."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
import torch

from ..core.errors import FieldError

DEVICES = ("auto", "cpu", "cuda")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags of bf16 arithmetic in hardware


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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def autocast_dtype(device: torch.device, amp: str) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of ``amp`` (bf16 | fp16 | none) on ``device`` (None: fp32), and why, in one line.

    On a CPU, bf16 autocast only where the CPU computes bf16 natively (measured on a 2-core AMD EPYC
    without it: 4x slower than fp32, as every bf16 op is emulated); fp16 autocast is CUDA's."""
    if amp == "none":
        return None, "fp32 (amp: none)"
    if device.type == "cuda":
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            return None, "fp32: this GPU has no bf16 (amp: fp16 uses float16 with loss scaling)"
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp], f"{amp} autocast on {torch.cuda.get_device_name(device)}"
    if amp == "fp16":
        return None, "fp32: fp16 autocast is for CUDA; on a CPU with native bf16 use amp: bf16"
    native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
    if native:
        return torch.bfloat16, f"bf16 autocast: this CPU computes bf16 natively ({', '.join(native)})"
    return None, f"fp32: this CPU has no native bf16 ({' or '.join(NATIVE_BF16_FLAGS)}), where bf16 autocast is slower than fp32"
