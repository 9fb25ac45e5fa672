"""Which device to run on, at which precision, and seeding every random number generator at once.

Everything device-specific is decided here, once: :func:`select_device` (auto: a CUDA GPU this torch
build can run, else Apple's MPS, else the CPU) and :func:`choose_precision` (``amp: auto``: bf16 where
the hardware computes it natively, fp16 with loss scaling on CUDA 7.x, fp32 elsewhere). The choice
itself is :func:`resolve_precision`, a pure function of :class:`Hardware` and the table ``AUTO_RULES``,
so every row is tested with faked hardware.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Sequence, get_args

import numpy as np
import torch

from .config import AmpName, DeviceName
from .errors import FieldError

DEVICES: tuple[str, ...] = get_args(DeviceName)  # train.device, listed once in core/config.py
AMPS: tuple[str, ...] = get_args(AmpName)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags of bf16 arithmetic in hardware
# The CUDA 12.6 wheels of the pinned torch are the ones still built for Maxwell, Pascal and Volta (5.0 to 7.0);
# the default CUDA 13 wheels start at Turing (7.5).
LEGACY_WHEELS = "https://download.pytorch.org/whl/cu126"
LEGACY_WHEEL_ARCHS = (50, 60, 70)  # sm_XY entries of those wheels below Turing


# ----------------------------------------------------------------------- device


def select_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``mps`` as a device (FieldError ``device`` where it is absent or unusable).

    ``auto``: CUDA when there is a GPU this torch build has kernels for (else the CPU, saying why),
    then MPS (Apple silicon), then the CPU."""
    if name not in DEVICES:
        raise FieldError("device", name, f"is not allowed; expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise FieldError("device", name, "is not allowed: no CUDA device is available here; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FieldError("device", name, "is not allowed: MPS (Apple silicon GPU) is not available here; use auto or cpu")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        problem = unsupported_gpu()
        if problem and name == "cuda":
            raise FieldError("device", name, f"is not allowed: {problem}; or use device cpu")
        if problem:
            print(f"device auto: training on the CPU: {problem}", flush=True)
            return torch.device("cpu")
        return torch.device("cuda")
    if name == "auto":
        name = "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def arch_supported(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a torch built for ``arch_list`` (``torch.cuda.get_arch_list()``) runs on a GPU of ``capability``.

    ``sm_XY`` is machine code: it runs on X.Y and later minors of the same major (sm_80 on an
    8.6 GPU); ``sm_XYa`` (architecture-specific features) on X.Y alone; ``compute_XY`` is PTX, which
    the driver compiles for any GPU of capability >= X.Y. An empty list (no CUDA build) judges nothing."""
    major, minor = capability
    cc = major * 10 + minor
    for entry in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", entry)
        if m is None:
            continue
        kind, built, suffix = m.group(1), int(m.group(2)), m.group(3)
        if suffix == "a":
            ok = built == cc
        elif kind == "compute":
            ok = built <= cc
        else:
            ok = built // 10 == major and built <= cc
        if ok:
            return True
    return not arch_list


def unsupported_gpu(index: int = 0) -> str:
    """'' where this torch build runs on GPU ``index``, else one sentence: the GPU, its capability, what to install."""
    capability = torch.cuda.get_device_capability(index)
    arch_list = torch.cuda.get_arch_list()
    if arch_supported(capability, arch_list):
        return ""
    major, minor = capability
    gpu = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}, sm_{major}{minor})"
    build = f"torch {torch.__version__} (CUDA {torch.version.cuda}) has kernels for {', '.join(arch_list)} only"
    if any(arch_supported(capability, [f"sm_{a}"]) for a in LEGACY_WHEEL_ARCHS):
        pins = " ".join(f"{p}=={version(p).split('+')[0]}" for p in ("torch", "torchvision"))
        fix = f"install torch's CUDA 12.6 build, which still has kernels for it: pip install {pins} --index-url {LEGACY_WHEELS}"
    else:
        fix = "no current torch build supports this GPU"
    return f"the GPU {gpu} is not supported: {build}; {fix}"


# ----------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on (:func:`hardware` reads it from a device; tests build their own)."""

    kind: str  # cuda | cpu | mps
    name: str  # the GPU's name, or "this CPU"
    capability: tuple[int, int] | None = None  # CUDA compute capability
    bf16: str = ""  # why it computes bf16 natively ("compute capability 8.0", "amx_bf16"); "" where it does not

    @property
    def cc(self) -> str:
        return "" if self.capability is None else f"{self.capability[0]}.{self.capability[1]}"


@dataclass(frozen=True)
class Precision:
    """The training precision: ``name`` (bf16 | fp16 | fp32) and ``reason`` (one line, printed and recorded)."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: no autocast, fp32)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def scaled(self) -> bool:
        """fp16 needs a GradScaler: its 5 exponent bits flush small gradients to zero unless the loss is scaled up."""
        return self.name == "fp16"

    def describe(self) -> str:
        return f"{self.name}{' with loss scaling' if self.scaled else ''} ({self.reason})"


Rule = tuple[str, Callable[[Hardware], bool], str, str]  # device kind, condition, precision, reason ({} from Hardware)
AUTO_RULES: tuple[Rule, ...] = (
    ("cuda", lambda hw: bool(hw.bf16), "bf16", "amp auto: {hw.name} computes bf16 natively ({hw.bf16})"),
    ("cuda", lambda hw: hw.capability is not None and hw.capability[0] == 7, "fp16",
     "amp auto: {hw.name} (compute capability {hw.cc}) has fp16 tensor cores but no native bf16"),
    ("cuda", lambda hw: True, "fp32", "amp auto: {hw.name} (compute capability {hw.cc}) has neither native bf16 nor fp16 tensor cores"),
    ("cpu", lambda hw: bool(hw.bf16), "bf16", "amp auto: this CPU computes bf16 natively ({hw.bf16})"),
    ("cpu", lambda hw: True, "fp32", "amp auto: this CPU has no native bf16 (" + " or ".join(NATIVE_BF16_FLAGS)
     + "), where bf16 autocast is slower than fp32"),
    ("mps", lambda hw: True, "fp32", "amp auto: mixed precision on Apple GPUs (MPS) is not verified by this project"),
)


def resolve_precision(amp: str, hw: Hardware) -> Precision:
    """The precision of ``amp`` (auto | bf16 | fp16 | none) on ``hw``: ``auto`` takes the first matching
    row of ``AUTO_RULES``; the others force theirs, saying where the hardware only emulates it."""
    if amp not in AMPS:
        raise FieldError("amp", amp, f"is not allowed; expected one of {', '.join(AMPS)}")
    if amp == "none":
        return Precision("fp32", "amp none")
    if amp == "auto":
        kind = hw.kind if hw.kind in ("cuda", "mps") else "cpu"
        name, why = next((p, r) for k, cond, p, r in AUTO_RULES if k == kind and cond(hw))
        return Precision(name, why.format(hw=hw))
    if amp == "bf16" and not hw.bf16:
        return Precision("bf16", f"amp bf16, forced: {hw.name} has no native bf16, so it is emulated (may be slower than fp32)")
    if amp == "fp16" and hw.kind == "cpu":
        return Precision("fp16", "amp fp16, forced: most CPUs emulate fp16 (may be slower than fp32)")
    return Precision(amp, f"amp {amp}" + (f": {hw.name} computes bf16 natively ({hw.bf16})" if amp == "bf16" else ""))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def hardware(device: torch.device) -> Hardware:
    """What :func:`resolve_precision` needs to know about ``device``."""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        # asks the current device: this one (distributed.start sets each rank's); True on 8.0+ only, where
        # the default (including_emulation=True) also answers True on a T4 or V100, which only emulate bf16
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        cc = f"{capability[0]}.{capability[1]}"
        return Hardware("cuda", torch.cuda.get_device_name(device), capability, f"compute capability {cc}" if native else "")
    if device.type == "mps":
        return Hardware("mps", "the Apple GPU (MPS)")
    return Hardware(device.type, "this CPU", bf16=", ".join(sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())))


def choose_precision(device: torch.device, amp: str) -> Precision:
    """The precision of ``amp`` on ``device`` (see :func:`resolve_precision`)."""
    return resolve_precision(amp, hardware(device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
