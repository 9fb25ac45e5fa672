"""Models by name (models/registry.py): the two the pipeline trains, and a third added by one entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PARAMS, PLAIN_RECIPE
from test_train import prepare

from inat_cnn.core.config import ScratchModelConfig, SyntheticConfig, TrainConfig
from inat_cnn.core.errors import UserError
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.models.registry import REGISTRY, Built, Entry, model_entry, register
from inat_cnn.training.stage import train_stage

TINY = {"blocks": 2, "filters": 4, "dense_units": 8, "input_size": 32}


def test_the_pipeline_models_are_registered_and_an_unknown_name_is_one_line():
    assert list(REGISTRY) == ["scratch", "finetune"]
    assert model_entry("scratch").sections == ("train", "model") and model_entry("finetune").sections == ("finetune",)
    with pytest.raises(UserError, match="model 'resnet' is not registered; the models are: scratch, finetune"):
        model_entry("resnet")


def test_a_third_model_is_one_registry_entry_and_trains_through_the_training_stage(tmp_path: Path, monkeypatch):
    """Registered under "tiny" (a 2-block CNN of its own label), it is built, trained, calibrated on
    val and written in the layout of every model (core.outputs.ModelFiles("tiny")), by name alone."""
    def build(arch: ScratchModelConfig, cfg: TrainConfig, class_names: list[str], side: int) -> Built:
        built = REGISTRY["scratch"].build(arch, cfg, class_names, side)
        built.details["label"] = "tiny CNN"
        return built

    raw = tmp_path / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=8, test_per_class=2, min_side=40, max_side=56,
                                       classes=["a", "b"]), 3, raw)
    prepare(tmp_path / "data", raw, size=40)
    params = {"seed": 0, "train": {**PARAMS["train"], **PLAIN_RECIPE, "epochs": 2, "batch_size": 8},
              "model": {**PARAMS["model"], **TINY}, "logging": PARAMS["logging"]}
    monkeypatch.chdir(tmp_path)
    register(Entry("tiny", ("train", "model"), TrainConfig, ScratchModelConfig, build))
    try:
        train_stage("tiny", params, "stages/train_tiny.py")
    finally:
        REGISTRY.pop("tiny")
    board = json.loads(Path("metrics/train_tiny.json").read_text())
    assert set(board) == {"tiny_val_acc", "tiny_epochs", "tiny_secs", "tiny_params"} and board["tiny_epochs"] == 2
    assert json.loads(Path("metrics/details/model_tiny.json").read_text())["label"] == "tiny CNN"
    assert json.loads(Path("metrics/details/train_tiny.json").read_text())["calibration"]["ece_bins"] == 15
    assert Path("models/tiny.pt").is_file() and (Path("dvclive/train_tiny/plots/metrics/val/acc.tsv")).is_file()
