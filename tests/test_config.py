"""Every params section is checked before work starts; a bad value names the key, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tool_env
from inat_cnn.core.config import (
    DataConfig, EvaluateConfig, FinetuneConfig, LoggingConfig, ScratchModelConfig, TrainConfig, from_dict,
)
from inat_cnn.core.errors import ConfigError


def test_the_shipped_params_are_valid():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    from_dict(DataConfig, params["data"], "data")
    from_dict(ScratchModelConfig, params["model"], "model")
    from_dict(TrainConfig, params["train"], "train")
    from_dict(FinetuneConfig, params["finetune"], "finetune")
    from_dict(EvaluateConfig, params["evaluate"], "evaluate")
    from_dict(LoggingConfig, params["logging"], "logging")


@pytest.mark.parametrize(
    "cls, section, values, message",
    [
        (ScratchModelConfig, "model", {"activation": "swish"}, r"model.activation = 'swish' .* one of relu, gelu"),
        (ScratchModelConfig, "model", {"dense_activation": "nope"}, r"model.dense_activation = 'nope'"),
        (ScratchModelConfig, "model", {"filters": 0}, r"model.filters = 0 .* positive integer"),
        (ScratchModelConfig, "model", {"filters": -8}, r"model.filters = -8"),
        (ScratchModelConfig, "model", {"filters": [32, 64]}, r"model.filters = \[32, 64\] .* list of 5 integers"),
        (ScratchModelConfig, "model", {"kernel_size": 0}, r"model.kernel_size = 0"),
        (ScratchModelConfig, "model", {"dense_units": -1}, r"model.dense_units = -1"),
        (ScratchModelConfig, "model", {"dropout": 1.0}, r"model.dropout = 1.0 .* \[0, 1\)"),
        (ScratchModelConfig, "model", {"dropout": -0.1}, r"model.dropout = -0.1"),
        (ScratchModelConfig, "model", {"filter_organisation": "triple"}, r"model.filter_organisation = 'triple' .* 'same' \| 'double' \| 'half'"),
        (ScratchModelConfig, "model", {"input_size": [224]}, r"model.input_size = \[224\]"),
        (ScratchModelConfig, "model", {"batch_norm": "yes"}, r"model.batch_norm = 'yes' .* true or false"),
        (ScratchModelConfig, "model", {"blocks": 0}, r"model.blocks = 0"),
        (ScratchModelConfig, "model", {"units": 3}, r"unknown key model.units"),
        (TrainConfig, "train", {"optimizer": "rmsprop"}, r"train.optimizer = 'rmsprop' .* adam, adamw, sgd"),
        (TrainConfig, "train", {"lr": 0}, r"train.lr = 0.0"),
        (TrainConfig, "train", {"lr": "fast"}, r"train.lr = 'fast' .* a number"),
        (TrainConfig, "train", {"epochs": 0}, r"train.epochs = 0"),
        (TrainConfig, "train", {"epochs": 2.5}, r"train.epochs = 2.5 .* an integer"),
        (TrainConfig, "train", {"batch_size": 0}, r"train.batch_size = 0"),
        (TrainConfig, "train", {"schedule": "step"}, r"train.schedule = 'step'"),
        (TrainConfig, "train", {"label_smoothing": 1.0}, r"train.label_smoothing = 1.0"),
        (TrainConfig, "train", {"amp": "fp8"}, r"train.amp = 'fp8'"),
        (FinetuneConfig, "finetune", {"strategy": "freeze_some"}, r"finetune.strategy = 'freeze_some'"),
        (FinetuneConfig, "finetune", {"trainable_blocks": -1}, r"finetune.trainable_blocks = -1"),
        (FinetuneConfig, "finetune", {"backbone_lr_factor": 0}, r"finetune.backbone_lr_factor = 0.0"),
        (DataConfig, "data", {"val_fraction": 1.5}, r"data.val_fraction = 1.5 .* \(0, 1\)"),
        (DataConfig, "data", {"sha256": "abc"}, r"data.sha256 = 'abc' .* 64 hex digits"),
        (DataConfig, "data", {"url": "ftp://x/y.zip"}, r"data.url = 'ftp://x/y.zip' .* http"),
        (DataConfig, "data", {"bad_images": "ignore"}, r"data.bad_images = 'ignore' .* 'skip' \| 'fail'"),
        (DataConfig, "data", {"synthetic": {"train_per_class": 1}}, r"data.synthetic.train_per_class = 1"),
        (EvaluateConfig, "evaluate", {"grid_cols": 0}, r"evaluate.grid_cols = 0"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(cls, section, values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, values, section)


def test_yaml_exponent_without_dot_is_accepted_as_a_number():
    assert from_dict(TrainConfig, {"lr": "1e-4"}, "train").lr == pytest.approx(1e-4)


def test_impossible_architecture_fails_before_training_with_the_params_named():
    from inat_cnn.models.scratch import ScratchCNN

    with pytest.raises(ConfigError, match=r"model.blocks = 9 .* model.input_size"):
        ScratchCNN(from_dict(ScratchModelConfig, {"blocks": 9, "filters": 4}, "model"), 10)


def test_a_stage_with_a_bad_param_exits_2_at_once_with_one_clear_line(tmp_path: Path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["optimizer"] = "adamx"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train_scratch.py")], cwd=tmp_path,
                          env=tool_env(), capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params: train.optimizer = 'adamx' is not allowed; expected one of adam, adamw, sgd"
    ]
    assert elapsed < 2  # params are checked before torch and the library are even imported


def _every_key():
    """(class, section, key) for every key of every params section, nested ones included."""
    import dataclasses

    def walk(cls, section):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                yield from ((c, s, k, (f.name,) + path) for c, s, k, path in walk(f.default_factory, f"{section}.{f.name}"))
            else:
                yield cls, section, f"{section}.{f.name}", (f.name,)

    for cls, section in ((DataConfig, "data"), (ScratchModelConfig, "model"), (TrainConfig, "train"),
                         (FinetuneConfig, "finetune"), (EvaluateConfig, "evaluate"), (LoggingConfig, "logging")):
        for _, _, key, path in walk(cls, section):
            yield pytest.param(cls, section, key, path, id=key)


@pytest.mark.parametrize("cls, section, key, path", list(_every_key()))
def test_every_key_rejects_a_value_of_the_wrong_kind_naming_the_key(cls, section, key, path):
    values: dict = {}
    node = values
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = {"not": "valid"}  # a mapping is the wrong kind for every leaf key
    with pytest.raises(ConfigError, match=rf"params: {key} = {{'not': 'valid'}} is not allowed; expected "):
        from_dict(cls, values, section)


@pytest.mark.parametrize("seed", [-1, "42", 1.5, True])
def test_the_seed_must_be_a_non_negative_integer(seed):
    from inat_cnn.core.errors import UserError
    from inat_cnn.core.stage_runner import seed_param

    with pytest.raises(UserError, match=rf"params: seed = {seed!r} is not allowed"):
        seed_param({"seed": seed})
