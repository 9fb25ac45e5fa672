"""Every params section is checked before work starts; a bad value names the key, the value and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import PARAMS, REPO, config, merged, tool_env
from inat_cnn.core.config import (
    AmpName, DataConfig, DeviceName, EvaluateConfig, FinetuneConfig, LoggingConfig, OptimizerName, PrepareConfig,
    ReportConfig, ScheduleName, ScratchModelConfig, Section, TrainConfig, from_dict,
)
from inat_cnn.core.errors import ConfigError

SECTIONS = {"data": DataConfig, "prepare": PrepareConfig, "model": ScratchModelConfig, "train": TrainConfig,
            "finetune": FinetuneConfig, "evaluate": EvaluateConfig, "report": ReportConfig, "logging": LoggingConfig}


def test_the_shipped_params_are_valid():
    for section, cls in SECTIONS.items():
        from_dict(cls, PARAMS[section], section)


def _keys(cls: type[Section], node: dict, section: str):
    """(key, in the model, in params.yaml) for every key of either, nested sections walked."""
    for name in sorted(set(cls.model_fields) | set(node)):
        field = cls.model_fields.get(name)
        sub = field.annotation if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, Section) else None
        if sub is not None and isinstance(node.get(name), dict):
            yield from _keys(sub, node[name], f"{section}.{name}")
        else:
            yield f"{section}.{name}", field is not None, name in node


def test_params_yaml_and_the_config_models_have_the_same_keys():
    """params.yaml is the one place defaults live: every model field is a key there and every key a field,
    and every section but `seed` is a model; nothing else in the library repeats a value of it."""
    from inat_cnn.data.images import DEFAULT_LIMITS

    assert set(PARAMS) - set(SECTIONS) == {"seed"}
    drift = [(key, in_model, in_file) for section, cls in SECTIONS.items()
             for key, in_model, in_file in _keys(cls, PARAMS[section], section) if in_model != in_file]
    assert drift == []  # (key, a model field, a params.yaml key)
    data = config(DataConfig, "data")
    assert (DEFAULT_LIMITS.max_pixels, DEFAULT_LIMITS.max_aspect_ratio) == (data.max_image_pixels, data.max_aspect_ratio)


def test_each_set_of_names_is_listed_once_and_its_tables_follow_it():
    from typing import get_args

    from inat_cnn.core import device
    from inat_cnn.models.activations import _CLASSES
    from inat_cnn.training import optim

    assert list(optim.OPTIMIZERS) == list(get_args(OptimizerName)) and list(optim.SCHEDULES) == list(get_args(ScheduleName))
    assert device.DEVICES == get_args(DeviceName) and device.AMPS == get_args(AmpName)
    assert tuple(_CLASSES) == get_args(ScratchModelConfig.model_fields["activation"].annotation)


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
        (ScratchModelConfig, "model", {"filter_organisation": "triple"}, r"model.filter_organisation = 'triple' .* one of same, double, half"),
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
        (DataConfig, "data", {"bad_images": "ignore"}, r"data.bad_images = 'ignore' .* one of skip, fail"),
        (DataConfig, "data", {"synthetic": {"train_per_class": 1}}, r"data.synthetic.train_per_class = 1"),
        (EvaluateConfig, "evaluate", {"grid_cols": 0}, r"evaluate.grid_cols = 0"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(cls, section, values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cls, merged(PARAMS[section], values), section)


@pytest.mark.parametrize("section, key", [("train", "lr"), ("data", "synthetic.min_side"), ("data", "synthetic")])
def test_a_key_left_out_is_refused_not_defaulted(section, key):
    values = copy.deepcopy(PARAMS[section])
    *parents, leaf = key.split(".")
    node = values
    for name in parents:
        node = node[name]
    del node[leaf]
    with pytest.raises(ConfigError, match=rf"^params: {section}.{key} is missing.*params.yaml lists them all"):
        from_dict(SECTIONS[section], values, section)


def test_yaml_exponent_without_dot_is_accepted_as_a_number():
    assert config(TrainConfig, "train", lr="1e-4").lr == pytest.approx(1e-4)


def test_impossible_architecture_fails_before_training_with_the_params_named():
    from inat_cnn.models.scratch import ScratchCNN

    with pytest.raises(ConfigError, match=r"model.blocks = 9 .* model.input_size"):
        ScratchCNN(config(ScratchModelConfig, "model", blocks=9, filters=4), 10)


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
    for section, cls in SECTIONS.items():
        for key, _, _ in _keys(cls, PARAMS[section], section):
            yield pytest.param(cls, section, key, id=key)


@pytest.mark.parametrize("cls, section, key", list(_every_key()))
def test_every_key_rejects_a_value_of_the_wrong_kind_naming_the_key(cls, section, key):
    changes: dict = {}
    node = changes
    *parents, leaf = key.split(".")[1:]
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = {"not": "valid"}  # a mapping is the wrong kind for every leaf key
    with pytest.raises(ConfigError, match=rf"^params: {key} = {{'not': 'valid'}} is not allowed; expected "):
        from_dict(cls, merged(PARAMS[section], changes), section)


@pytest.mark.parametrize("seed", [-1, "42", 1.5, True])
def test_the_seed_must_be_a_non_negative_integer(seed):
    from inat_cnn.core.errors import UserError
    from inat_cnn.core.stage_runner import seed_param

    with pytest.raises(UserError, match=rf"params: seed = {seed!r} is not allowed"):
        seed_param({"seed": seed})
