"""Device and precision selection (core/device.py), row by row against faked hardware; the batches and a
training step on a device that is not the CPU (the meta device stands in for MPS, which is absent here);
a real fp16 + GradScaler training step (on the CPU here, forced; on CUDA where there is one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from inat_cnn.core.config import ScratchModelConfig, SyntheticConfig
from inat_cnn.core.errors import ConfigError, FieldError, fields_named
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.prepared import open_prepared
from inat_cnn.data.preprocessing import BatchTransform, Preprocessing
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.core import device as device_module
from inat_cnn.evaluation.predictions import class_logits
from inat_cnn.training import distributed, loop
from inat_cnn.core.device import arch_supported, choose_precision, select_device
from inat_cnn.training.optim import make_optimizer, make_scheduler
from conftest import config, replace, train_config
from test_train import FAST_TRAIN, SMALL_MODEL, prepare, train_small

CUDA13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned torch 2.14.1+cu130 wheel


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int], archs: list[str] = CUDA13_ARCHS) -> None:
    """torch.cuda as on a machine with that GPU; is_bf16_supported answers as the real one does (True on a
    7.x GPU unless including_emulation=False)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: capability >= (8, 0) or (including_emulation and capability >= (7, 0)))


def fake_cpu(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(device_module, "cpu_flags", lambda: frozenset(flags))


# (hardware, amp) -> (precision, GradScaler?, words of the reason). The amp: auto rows are the documented table.
ROWS = [
    (("cuda", "NVIDIA H100 80GB HBM3", (9, 0)), "auto", "bf16", False, "computes bf16 natively (compute capability 9.0)"),
    (("cuda", "NVIDIA A100-SXM4-40GB", (8, 0)), "auto", "bf16", False, "computes bf16 natively (compute capability 8.0)"),
    (("cuda", "Tesla T4", (7, 5)), "auto", "fp16", True, "Tesla T4 (compute capability 7.5) has fp16 tensor cores but no native bf16"),
    (("cuda", "Tesla V100-SXM2-16GB", (7, 0)), "auto", "fp16", True, "(compute capability 7.0) has fp16 tensor cores"),
    (("cuda", "Tesla P100-PCIE-16GB", (6, 0)), "auto", "fp32", False, "has neither native bf16 nor fp16 tensor cores"),
    (("cpu", {"avx2", "amx_bf16"}), "auto", "bf16", False, "this CPU computes bf16 natively (amx_bf16)"),
    (("cpu", {"avx2", "avx512_bf16"}), "auto", "bf16", False, "this CPU computes bf16 natively (avx512_bf16)"),
    (("cpu", {"avx2", "fma"}), "auto", "fp32", False, "this CPU has no native bf16"),
    (("mps",), "auto", "fp32", False, "Apple GPUs (MPS)"),
    # forced
    (("cuda", "Tesla T4", (7, 5)), "bf16", "bf16", False, "forced: Tesla T4 has no native bf16, so it is emulated"),
    (("cuda", "NVIDIA A100-SXM4-40GB", (8, 0)), "fp16", "fp16", True, "amp fp16"),
    (("cuda", "NVIDIA H100 80GB HBM3", (9, 0)), "none", "fp32", False, "amp none"),
    (("cpu", {"avx2"}), "bf16", "bf16", False, "forced: this CPU has no native bf16, so it is emulated"),
    (("cpu", {"avx512_bf16"}), "fp16", "fp16", True, "forced: most CPUs emulate fp16"),
    (("cpu", {"amx_bf16"}), "none", "fp32", False, "amp none"),
    (("mps",), "fp16", "fp16", True, "amp fp16"),
]


@pytest.mark.parametrize(("hw", "amp", "name", "scaled", "says"), ROWS, ids=[f"{i}-{r[0][0]}-{r[1]}-{r[2]}" for i, r in enumerate(ROWS)])
def test_precision_rows(monkeypatch, hw, amp, name, scaled, says):
    if hw[0] == "cuda":
        fake_gpu(monkeypatch, hw[1], hw[2])
    elif hw[0] == "cpu":
        fake_cpu(monkeypatch, hw[1])
    chosen = choose_precision(torch.device(hw[0]), amp)
    assert (chosen.name, chosen.scaled) == (name, scaled) and says in chosen.reason, chosen
    assert chosen.dtype is {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]


def test_an_unknown_amp_or_device_names_the_callers_field():
    with pytest.raises(FieldError, match=r"params: train.amp = 'fp8' is not allowed; expected one of auto, bf16, fp16, none"):
        with fields_named("params: train."):
            choose_precision(torch.device("cpu"), "fp8")
    with pytest.raises(FieldError, match=r"params: train.device = 'tpu' is not allowed; expected one of auto, cpu, cuda, mps"):
        with fields_named("params: train."):
            select_device("tpu")


def test_this_machines_flags_are_read():
    assert device_module.cpu_flags(), "no CPU flags found in /proc/cpuinfo"


# ----------------------------------------------------------------------- GPUs this torch build cannot run


@pytest.mark.parametrize(
    ("capability", "archs", "ok"),
    [
        ((6, 0), CUDA13_ARCHS, False),  # P100
        ((7, 0), CUDA13_ARCHS, False),  # V100
        ((7, 5), CUDA13_ARCHS, True),  # T4
        ((8, 9), CUDA13_ARCHS, True),  # L4: sm_86 machine code runs on later 8.x
        ((12, 1), CUDA13_ARCHS, True),
        ((10, 0), ["sm_90", "compute_90"], True),  # PTX: compiled by the driver for any later GPU
        ((8, 6), ["sm_90", "compute_90"], False),  # ... never an earlier one
        ((9, 0), ["sm_90a"], True),
        ((10, 0), ["sm_90a"], False),  # architecture-specific code: that GPU alone
        ((8, 0), ["sm_86"], False),  # machine code never runs on an earlier minor
        ((6, 1), ["sm_50", "sm_60", "sm_70"], True),  # GTX 1080 on the CUDA 12.6 wheel
        ((8, 0), [], True),  # nothing to judge
    ],
)
def test_arch_list_rows(capability, archs, ok):
    assert arch_supported(capability, archs) is ok


def test_an_unsupported_gpu_is_one_line_with_device_cuda(monkeypatch):
    fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", (6, 0))
    with pytest.raises(FieldError) as caught, fields_named("params: train."):
        select_device("cuda")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("params: train.device = 'cuda' is not allowed: the GPU Tesla P100-PCIE-16GB")
    for words in ("compute capability 6.0, sm_60", "sm_75, sm_80", "pip install torch==2.14.1 torchvision==0.29.1 "
                  "--index-url https://download.pytorch.org/whl/cu126", "or use device cpu"):
        assert words in line, line


def test_device_auto_falls_back_to_the_cpu_on_an_unsupported_gpu_and_says_so(monkeypatch, capsys):
    fake_gpu(monkeypatch, "Tesla K80", (3, 7))
    assert select_device("auto") == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.startswith("device auto: training on the CPU: the GPU Tesla K80 (compute capability 3.7, sm_37)"), out
    assert "no current torch build supports this GPU" in out


def test_a_supported_gpu_is_chosen_silently(monkeypatch, capsys):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # CUDA first
    assert select_device("auto") == select_device("cuda") == torch.device("cuda")
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------- Apple silicon (MPS)


def test_mps_is_chosen_where_available_and_cuda_is_not(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == select_device("mps") == torch.device("mps")
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(FieldError, match=r"--device = 'mps' is not allowed: MPS \(Apple silicon GPU\) is not available here"):
        with fields_named({"device": "--device"}):
            select_device("mps")


def test_epoch_sums_avoid_float64_on_mps():
    assert loop.accumulator_dtype(torch.device("mps")) is torch.float32  # MPS has no float64
    assert loop.accumulator_dtype(torch.device("cpu")) is torch.float64


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device")
    generate_synthetic(SyntheticConfig(train_per_class=6, test_per_class=2, min_side=40, max_side=56, classes=["a", "b"]), 0, root / "raw")
    return prepare(root, root / "raw", 0, size=40)[0]


def _runner_and_loader(prepared: Path, device: torch.device, amp: str):
    cfg = train_config(lr=1e-3, batch_size=4, device="cpu", amp=amp, channels_last=False)
    torch.manual_seed(0)
    model = ScratchCNN(config(ScratchModelConfig, "model", blocks=2, filters=4, dense_units=8, input_size=32), 2)
    runner = loop.Runner(model, cfg, device)
    loader = BatchLoader(open_prepared(prepared, "train"), 4, device, BatchTransform(Preprocessing((32, 32), source_size=40), augment=True),
                         shuffle=True)
    optimizer = make_optimizer(cfg, runner.model.parameters())
    return runner, loader, optimizer, make_scheduler(cfg, optimizer, len(loader))


def test_a_training_step_keeps_everything_on_a_non_cpu_device(prepared: Path, monkeypatch):
    """The meta device stands in for MPS: any tensor left on the host (a batch, a label, an augmentation
    draw, a constant of the transform) meets one on 'meta' in an op and raises."""
    meta = torch.device("meta")
    runner, loader, optimizer, scheduler = _runner_and_loader(prepared, meta, "none")
    for x, y in loader:
        assert x.device == y.device == meta and x.dtype is torch.float32
    summed = []
    # meta tensors hold no values: the epoch's one host sync is replaced by zeros (it would read them back)
    monkeypatch.setattr(loop.distributed, "sum_across", lambda t, ctx: summed.append(t.device) or torch.zeros(3))
    runner.train_epoch(loader, nn.CrossEntropyLoss(), optimizer, scheduler)
    assert summed == [meta] and all(p.device == meta for p in runner.model.parameters())
    evaluation = BatchLoader(open_prepared(prepared, "val"), 4, meta, BatchTransform(Preprocessing((32, 32), source_size=40), augment=False))
    for x, _ in evaluation:  # the evaluation view and its test-time mirror, as evaluation/predictions.py predicts
        assert class_logits(runner.model.eval(), x, tta=True).device == meta


@pytest.mark.parametrize(("kind", "local_rank", "device", "backend"),
                         [("cuda", 1, torch.device("cuda", 1), "nccl"), ("cpu", 1, torch.device("cpu"), "gloo")])
def test_each_rank_takes_its_own_gpu_with_nccl_and_the_cpu_with_gloo(monkeypatch, kind, local_rank, device, backend):
    """Under torchrun (environment faked; no process group is really made): rank LOCAL_RANK on cuda:LOCAL_RANK."""
    for var, value in (("RANK", local_rank), ("LOCAL_RANK", local_rank), ("WORLD_SIZE", 2)):
        monkeypatch.setenv(var, str(value))
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    ctx, chosen = distributed.start(torch.device(kind))
    assert (ctx.rank, ctx.world_size, chosen) == (local_rank, 2, device)
    assert calls == ([("set_device", device)] if kind == "cuda" else []) + [("init", backend)]


def test_several_processes_on_mps_are_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"processes > 1 runs on CUDA GPUs \(NCCL\) or on the CPU \(gloo\), not on mps"):
        distributed.start(torch.device("mps"))


# ----------------------------------------------------------------------- real reduced-precision steps


@pytest.mark.parametrize("kind", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 + GradScaler on CUDA is the T4/V100 path of amp auto"))])
def test_a_real_fp16_step_goes_through_the_grad_scaler(prepared: Path, kind: str):
    runner, loader, optimizer, scheduler = _runner_and_loader(prepared, torch.device(kind), "fp16")
    assert runner.precision.scaled and runner.scaler.is_enabled() and runner.amp_dtype is torch.float16
    before = [p.detach().clone() for p in runner.model.parameters()]
    result = runner.train_epoch(loader, nn.CrossEntropyLoss(), optimizer, scheduler)
    assert runner.scaler.state_dict()["scale"] > 0  # the scaler scaled this epoch's losses (empty when unused)
    assert result["images"] == len(loader.split) and torch.isfinite(torch.tensor(result["loss"]))
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, runner.model.parameters()))


def test_bf16_training_is_deterministic_and_recorded(monkeypatch, tmp_path: Path, capsys):
    """Resolved by amp: auto on a CPU with native bf16 (faked: where this machine only emulates it, it is
    only slower), printed, written to the timing; two runs agree exactly."""
    fake_cpu(monkeypatch, {"avx512_bf16"})
    raw = tmp_path / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=8, test_per_class=2, min_side=64, max_side=96, classes=["a", "b"]), 1, raw)
    cfg = replace(FAST_TRAIN, epochs=2, batch_size=8, amp="auto")
    model = replace(SMALL_MODEL, blocks=3, filters=8, dense_units=16)
    first, _ = train_small(tmp_path / "1", raw, model, cfg)
    assert "bf16 (amp auto: this CPU computes bf16 natively (avx512_bf16))" in capsys.readouterr().out
    assert (first.timing()["precision"], first.timing()["precision_reason"]) == ("bf16", "amp auto: this CPU computes bf16 natively (avx512_bf16)")
    assert "precision" not in first.summary()
    second, _ = train_small(tmp_path / "2", raw, model, cfg)
    assert first.summary() == second.summary()
    assert (tmp_path / "1" / "model.pt").read_bytes() == (tmp_path / "2" / "model.pt").read_bytes()
