"""`inat-cnn` names its own flags, and a damaged checkpoint is one clear line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cli, config, one_error_line, run

from inat_cnn.core.config import ScratchModelConfig
from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec, save_checkpoint
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.data.preprocessing import Preprocessing

MODEL = config(ScratchModelConfig, "model", blocks=2, filters=4, dense_units=8, input_size=16)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    spec = ModelSpec(SCRATCH_ARCH, MODEL.model_dump(), ["a", "b"], Preprocessing((16, 16), source_size=16))
    save_checkpoint(tmp_path / "m.pt", ScratchCNN(MODEL, 2).state_dict(), spec, epoch=1, metrics={})
    return tmp_path / "m.pt"


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "red.png")
    return tmp_path / "red.png"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_device_cuda_without_cuda_names_the_flag(checkpoint: Path, tmp_path: Path):
    line = one_error_line(cli("predict", checkpoint, _image(tmp_path), "--device", "cuda"))
    assert "--device = 'cuda'" in line and "no CUDA device" in line and "train.device" not in line


def test_predict_top_k_names_the_flag(checkpoint: Path, tmp_path: Path):
    """The console script itself, as a user runs it: exit 2 and one line, no warning or traceback."""
    line = one_error_line(run(["inat-cnn", "predict", str(checkpoint), str(_image(tmp_path)), "--top-k", "0"], tmp_path, check=False))
    assert "--top-k = 0 is not allowed" in line


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda c: [1, 2, 3], r"holds a list, not an inat-cnn checkpoint"),
        (lambda c: {k: v for k, v in c.items() if k != "model_config"}, r"the section\(s\) model_config are missing"),
        (lambda c: {**c, "model_config": {}}, r"the section 'model_config' is empty or malformed"),
        (lambda c: {**{k: v for k, v in c.items() if k != "model_state"}, "model_stat": c["model_state"]},
         r"unknown section 'model_stat' \(did you mean 'model_state'\?\)"),
        (lambda c: {**c, "model_config": {"blocks": "five"}}, r"its model_config / arch cannot be built"),
    ],
    ids=["not-a-dict", "missing-section", "empty-section", "misspelled-section", "wrong-config"],
)
def test_a_damaged_checkpoint_is_one_clear_line(checkpoint: Path, tmp_path: Path, damage, expected):
    import re

    ckpt = torch.load(checkpoint, weights_only=True)
    torch.save(damage(ckpt), checkpoint)
    line = one_error_line(cli("predict", checkpoint, _image(tmp_path)))
    assert str(checkpoint) in line and re.search(expected, line), line
