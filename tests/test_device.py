"""The precision each device trains at: bf16 autocast on a CPU only where it computes bf16 natively."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inat_cnn.core.config import SyntheticConfig
from inat_cnn.core.errors import FieldError, fields_named
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.training import device as device_module
from inat_cnn.training.device import autocast_dtype, select_device
from test_train import FAST_TRAIN, SMALL_MODEL, train_small

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "amp", "dtype", "says"),
    [
        ({"avx2", "avx512_bf16"}, "bf16", torch.bfloat16, "computes bf16 natively (avx512_bf16)"),
        ({"avx2", "amx_bf16"}, "bf16", torch.bfloat16, "natively (amx_bf16)"),
        ({"avx2"}, "bf16", None, "fp32: this CPU has no native bf16"),
        ({"avx512_bf16"}, "fp16", None, "fp16 autocast is for CUDA"),
        ({"avx512_bf16"}, "none", None, "fp32 (amp: none)"),
    ],
)
def test_cpu_precision_follows_the_cpus_bf16_support(monkeypatch, flags, amp, dtype, says):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: frozenset(flags))
    chosen, why = autocast_dtype(CPU, amp)
    assert chosen is dtype and says in why


def test_this_machines_flags_are_read():
    assert device_module.cpu_flags(), "no CPU flags found in /proc/cpuinfo"


def test_an_unknown_device_names_the_callers_field():
    with pytest.raises(FieldError, match=r"params: train.device = 'tpu' is not allowed; expected one of auto, cpu, cuda"):
        with fields_named("params: train."):
            select_device("tpu")


def test_bf16_training_on_a_cpu_is_deterministic(monkeypatch, tmp_path: Path, capsys):
    """Forced on (this machine may lack native bf16: then it is only slower), two runs agree exactly."""
    monkeypatch.setattr(device_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    raw = tmp_path / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=8, test_per_class=2, min_side=64, max_side=96, classes=["a", "b"]), 1, raw)
    cfg = replace(FAST_TRAIN, epochs=2, batch_size=8, amp="bf16")
    model = replace(SMALL_MODEL, blocks=3, filters=8, dense_units=16)
    first, _ = train_small(tmp_path / "1", raw, model, cfg)
    assert "bf16 autocast" in capsys.readouterr().out
    second, _ = train_small(tmp_path / "2", raw, model, cfg)
    assert first.summary() == second.summary()
    assert (tmp_path / "1" / "model.pt").read_bytes() == (tmp_path / "2" / "model.pt").read_bytes()
