"""The HTML report's parts that need no pipeline run (the page itself is built and opened in a real
browser by tests/test_pipeline_e2e.py)."""

from __future__ import annotations

import base64
import io
from collections import Counter

import numpy as np
import pytest
from matplotlib.figure import Figure

from inat_cnn.core.config import ReportConfig, from_dict
from inat_cnn.core.errors import ConfigError, UserError
from inat_cnn.report.observations import comparison_observations, confused_pairs, model_observations, sweep_observations
from inat_cnn.report.page import PHOTO_PNG_BYTES, data_uri
from inat_cnn.viz.canvas import png_bytes


def test_confused_pairs_add_both_directions_and_ignore_the_diagonal():
    confusion = Counter({("a", "a"): 9, ("a", "b"): 2, ("b", "a"): 3, ("c", "a"): 4, ("b", "c"): 1})
    assert confused_pairs(confusion) == [("a", "b", 5), ("a", "c", 4), ("b", "c", 1)]
    assert confused_pairs(confusion, top=1) == [("a", "b", 5)]
    assert confused_pairs(Counter({("a", "a"): 3})) == []


def test_model_observations_name_ties_and_the_val_to_test_gap():
    per_class = {c: {"f1": f1, "precision": f1, "recall": f1, "support": 5} for c, f1 in
                 (("cat", 0.9), ("dog", 0.2), ("owl", 0.2))}
    record = {"train": {"best_val_acc": 0.5, "best_epoch": 3, "epochs_run": 9, "stopped_early": True},
              "evaluate": {"accuracy": 0.42, "per_class": per_class}, "confusion": Counter({("dog", "owl"): 2})}
    facts = model_observations(record)
    assert facts[0] == ("Best validation accuracy 50.0 % at epoch 3 of 9 (stopped early); that checkpoint scores "
                        "42.0 % on the test set (-8.0 points).")
    assert facts[1] == "Easiest: cat (F1 0.90); hardest: dog, owl (F1 0.20)."
    assert facts[2] == "Most confused: dog ↔ owl (2 test images)." and len(facts) == 3  # no precision recorded
    record["timing"] = {"precision": "fp32", "precision_reason": "amp auto: this CPU has no native bf16"}
    assert model_observations(record)[3] == "Trained in fp32: amp auto: this CPU has no native bf16."


def test_sweep_observations_name_the_most_important_param_and_its_best_value():
    summary = {"best": {"name": "s-t3", "value": 0.61, "params": {"train.lr": 0.003, "model.dropout": 0.2}},
               "importance": [{"param": "model.dropout", "importance": 0.3}, {"param": "train.lr", "importance": 0.7}],
               "trials": 8, "states": {"complete": 6, "pruned": 2}, "epochs": 90}
    facts = sweep_observations(summary)
    assert "train.lr (70.0 % of the variance explained); the best trial used train.lr = 0.003" in facts[1]
    assert facts[2] == "8 trials, 2 pruned early, 90 epochs spent in all."


def _png(noise: bool) -> bytes:
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.imshow(np.random.default_rng(0).random((300, 300, 3)) if noise else np.zeros((4, 4)))
    return png_bytes(fig)


def test_the_comparison_names_the_compare_stages_choice_and_refuses_a_stale_one():
    def record(label: str, val: float, test: float, params: int) -> dict:
        return {"model": {"label": label, "trainable_params": params, "flops_per_image": params}, "train": {"best_val_acc": val},
                "evaluate": {"accuracy": test}, "timing": {"train_seconds": 1.0}}

    records = {"scratch": record("scratch CNN", 0.6, 0.5, 1), "finetune": record("lite0", 0.9, 0.8, 4)}
    facts = comparison_observations(records, "lite0")
    assert facts[0] == "Chosen by validation accuracy: lite0 (90.0 % validation, 80.0 % test)."
    assert facts[1].startswith("Against scratch CNN: +30.0 test points with 4.0× the trainable parameters")
    with pytest.raises(UserError, match=r"compare.json chose 'resnet', none of the report's models \('scratch CNN', 'lite0'\); "
                                        r"run the compare stage"):
        comparison_observations(records, "resnet")


def test_photographs_are_embedded_as_jpeg_and_line_art_stays_png():
    photo, plain = _png(noise=True), _png(noise=False)
    assert len(photo) > PHOTO_PNG_BYTES > len(plain)
    big, small = data_uri(photo), data_uri(plain)
    assert big.startswith("data:image/jpeg;base64,") and len(big) < len(photo)
    assert small.startswith("data:image/png;base64,") and base64.b64decode(small.split(",", 1)[1]) == plain
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(big.split(",", 1)[1]))).size == Image.open(io.BytesIO(photo)).size


@pytest.mark.parametrize("value", [0, 21, "three"])
def test_report_params_are_checked_by_name(value):
    with pytest.raises(ConfigError, match="report.samples_per_class"):
        from_dict(ReportConfig, {"samples_per_class": value}, "report")
