"""`inat-cnn export --format onnx`: onnxruntime's calibrated outputs match PyTorch's on real photos,
for a scratch CNN and the fine-tuned efficientnet_lite0; the metadata; a clear error without the extra."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inat_cnn.cli import main
from inat_cnn.core.config import ScratchModelConfig, SyntheticConfig
from inat_cnn.core.errors import UserError
from inat_cnn.data.preprocessing import BatchTransform, Preprocessing
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.evaluation.predict import load_square, predict_images
from inat_cnn.models.build import load_model
from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec, save_checkpoint, set_temperature
from inat_cnn.models.scratch import ScratchCNN
from conftest import config, replace
from test_predict import _lite0_checkpoint
from test_train import FAST_TRAIN, train_small

ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed: pip install -e '.[onnx]'")
onnx = pytest.importorskip("onnx")

from inat_cnn.export.onnx_export import export_checkpoint, onnx_input  # noqa: E402

PHOTOS_PER_CLASS = 2


def _photos(real_photos: Path) -> tuple[list[str], list[Path]]:
    val = real_photos / "flowers5" / "val"
    classes = sorted(p.name for p in val.iterdir() if p.is_dir())
    return classes, [p for c in classes for p in sorted((val / c).glob("*.jpg"))[:PHOTOS_PER_CLASS]]


def _scratch(tmp_path: Path, classes: list[str]) -> Path:
    """A small scratch CNN trained an epoch on synthetic images named after the flowers5 classes."""
    raw = tmp_path / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=6, test_per_class=1, min_side=48, max_side=64, classes=classes), 3, raw)
    cfg = config(ScratchModelConfig, "model", blocks=3, filters=8, dense_units=16, dropout=0.1, input_size=48)
    train_small(tmp_path, raw, cfg, replace(FAST_TRAIN, epochs=1, batch_size=8))
    return tmp_path / "model.pt"


def _check_matches_pytorch(ckpt: Path, photos: list[Path], temperature: float) -> None:
    set_temperature(ckpt, temperature)
    out = export_checkpoint(ckpt)
    assert out == ckpt.with_suffix(".onnx")
    model, spec, _ = load_model(ckpt)
    pre = spec.preprocessing
    squares = torch.stack([load_square(p, pre.source_size) for p in photos])
    with torch.no_grad():
        expected = model(BatchTransform(pre, augment=False)(squares)).float() / temperature
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], {"image": onnx_input(squares, pre).numpy()})
    assert logits.shape == (len(photos), len(spec.class_names)) and probs.dtype == np.float32
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs, torch.softmax(expected, 1).numpy(), atol=1e-4, rtol=0)
    # ... and what `inat-cnn predict` prints for the same files (calibrated by the same temperature)
    for row, result in zip(probs, predict_images(ckpt, photos, top_k=len(spec.class_names), device="cpu")):
        by_class = {t["class"]: t["probability"] for t in result["top"]}
        np.testing.assert_allclose(row, [by_class[c] for c in spec.class_names], atol=1e-4, rtol=0)
    # one image at a time too: the batch size is free
    [one, _] = session.run(None, {"image": onnx_input(squares[:1], pre).numpy()})
    np.testing.assert_allclose(one, logits[:1], atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"]) == spec.class_names
    assert meta["input_size"] == ",".join(map(str, pre.input_size))
    assert float(meta["temperature"]) == temperature
    assert session.get_inputs()[0].shape[1:] == [3, *pre.input_size]


def test_scratch_export_matches_pytorch_on_real_photos(real_photos: Path, tmp_path: Path):
    classes, photos = _photos(real_photos)
    _check_matches_pytorch(_scratch(tmp_path, classes), photos, temperature=1.6)


def test_lite0_export_matches_pytorch_on_real_photos(real_photos: Path, tmp_path: Path):
    classes, photos = _photos(real_photos)
    _check_matches_pytorch(_lite0_checkpoint(tmp_path / "lite0.pt", classes), photos, temperature=0.8)


def test_cli_export_and_its_errors(tmp_path: Path, monkeypatch, capsys):
    cfg = config(ScratchModelConfig, "model", blocks=2, filters=4, dense_units=8, input_size=32)
    ckpt = tmp_path / "model.pt"
    spec = ModelSpec(SCRATCH_ARCH, cfg.model_dump(), ["x", "y"], Preprocessing(cfg.input_hw, source_size=64))
    save_checkpoint(ckpt, ScratchCNN(cfg, 2).state_dict(), spec, epoch=0, metrics={})
    main(["export", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "out" / "m.onnx")])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'out' / 'm.onnx'}"
    onnx.checker.check_model(str(tmp_path / "out" / "m.onnx"))

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.pt'}: checkpoint not found")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UserError, match=r"needs onnxruntime: install the optional extra with pip install -e '\.\[onnx\]'"):
        export_checkpoint(ckpt)
