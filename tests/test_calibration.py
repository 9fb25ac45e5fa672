"""Calibrated confidences: ECE, the temperature fit (on the validation split only), the checkpoint's
temperature and its use by `inat-cnn predict`."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inat_cnn.core.config import ScratchModelConfig, SyntheticConfig
from inat_cnn.core.errors import FieldError, UserError
from inat_cnn.data.prepared import open_prepared
from inat_cnn.data.preprocessing import Preprocessing
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.evaluation.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    calibrate_checkpoint,
    expected_calibration_error,
    fit_temperature,
    measure_calibration,
    negative_log_likelihood,
    reliability_bins,
    usable_temperature,
)
from inat_cnn.evaluation.predictions import predict_logits, softmax
from inat_cnn.evaluation.predict import predict_images
from inat_cnn.models.build import load_model
from inat_cnn.models.checkpoint import (
    SCRATCH_ARCH,
    ModelSpec,
    load_checkpoint,
    save_checkpoint,
    has_temperature,
    set_temperature,
    temperature_of,
)
from inat_cnn.models.scratch import ScratchCNN
from conftest import config
from test_train import SMALL_SIZE, prepare

CLASSES = ["a", "b", "c"]
TINY = config(ScratchModelConfig, "model", blocks=2, filters=4, dense_units=8, dropout=0.0, input_size=32)


def _reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """ECE written as the definition reads: per bin (lo, hi], |accuracy - mean confidence| x share."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


def test_ece_of_known_inputs():
    # 10 images at confidence 0.9, 8 right: |0.8 - 0.9| = 0.1
    probs = np.tile([0.9, 0.05, 0.05], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1)
    # two bins: 4 images at 0.6 all right (gap 0.4), 4 at 0.95 half right (gap 0.45): ECE 0.425
    probs = np.array([[0.6, 0.4]] * 4 + [[0.05, 0.95]] * 4)
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    bins = reliability_bins(probs, labels, 15)
    assert bins.counts.sum() == 8 and (bins.counts > 0).sum() == 2
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)
    # perfectly calibrated: confidence 1 and always right
    assert expected_calibration_error(np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 1])) == 0.0
    # a confidence on a bin edge (exactly 2/3 = 10/15) belongs to the bin below it, (lo, hi]
    edge = np.array([[2 / 3, 1 / 3]])
    assert reliability_bins(edge, np.array([0]), 15).counts[9] == 1
    # random inputs against the definition, for several bin counts
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2, (500, 5)))
    labels = rng.integers(0, 5, 500)
    for n in (1, 10, 15):
        assert expected_calibration_error(probs, labels, n) == pytest.approx(_reference_ece(probs, labels, n), abs=1e-12)
    with pytest.raises(FieldError, match="ece_bins = 0 is not allowed"):
        reliability_bins(probs, labels, 0)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_a_known_temperature(true_t: float):
    """Labels drawn from softmax(z / T): the fitted temperature of z is T, and it lowers NLL and ECE."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6000, 5))
    p = softmax(logits, true_t)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    cal = measure_calibration(logits, labels, fitted)
    assert cal.nll_after < cal.nll_before and cal.ece_after < cal.ece_before
    assert cal.ece_after < 0.02 < cal.ece_before
    assert negative_log_likelihood(logits, labels, fitted) == pytest.approx(cal.nll_after)
    assert fit_temperature(logits, labels) == fitted  # deterministic


def test_a_perfectly_separated_split_gives_a_finite_sharpening_temperature():
    """Right on every image, the NLL keeps falling as T -> 0: the fit stays finite, within its bound."""
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 5)
    labels = np.array([0, 1] * 5)
    fitted = fit_temperature(logits, labels)
    assert MIN_TEMPERATURE <= fitted < 0.5
    assert negative_log_likelihood(logits, labels, fitted) < 1e-6
    assert fit_temperature(logits * 1000, labels) >= MIN_TEMPERATURE  # no overflow, no NaN


def _checkpoint(path: Path, seed: int = 0) -> ModelSpec:
    torch.manual_seed(seed)
    model = ScratchCNN(TINY, len(CLASSES))
    with torch.no_grad():  # a spread of logits: an untrained head is near uniform
        model.classifier[-1].weight.mul_(20)
    spec = ModelSpec(SCRATCH_ARCH, TINY.model_dump(), CLASSES, Preprocessing(TINY.input_hw, source_size=SMALL_SIZE))
    save_checkpoint(path, model.state_dict(), spec, epoch=1, metrics={"val_acc": 0.5})
    return spec


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """(root with prepared/{train,val,test}, raw folder): a small synthetic set, three classes."""
    root = tmp_path_factory.mktemp("calibration")
    raw = root / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=12, test_per_class=4, min_side=48, max_side=64, classes=CLASSES), 5, raw)
    prepare(root, raw)
    return root, raw


def test_checkpoint_temperature_round_trip(tmp_path: Path):
    path = tmp_path / "m.pt"
    _checkpoint(path)
    assert "temperature" not in load_checkpoint(path) and temperature_of(load_checkpoint(path)) == 1.0  # old checkpoints
    before = load_checkpoint(path)
    set_temperature(path, 1.75)
    after = load_checkpoint(path)
    assert temperature_of(after) == 1.75
    assert {k: v for k, v in after.items() if k not in ("temperature", "model_state")} == \
        {k: v for k, v in before.items() if k != "model_state"}
    assert all(torch.equal(after["model_state"][k], v) for k, v in before["model_state"].items())
    assert temperature_of(load_model(path)[2]) == 1.75
    for bad in (0, -1.0, math.nan, math.inf, True):
        with pytest.raises(FieldError, match="temperature .* is not allowed"):
            set_temperature(path, bad)
    after["temperature"] = -2.0
    torch.save(after, path)
    with pytest.raises(UserError, match=r"m.pt: the section 'temperature' is empty or malformed"):
        load_checkpoint(path)


def test_calibration_fits_on_the_validation_split_only(prepared, tmp_path: Path):
    """calibrate_checkpoint reads val alone (the test split may be missing). This untrained model is
    right nowhere in particular, so the val NLL keeps falling to the search's bound (T = 20): that T
    is the bound's, not the data's, so none is stored and the note says why; the test set's own fit is
    another temperature."""
    root, _ = prepared
    only = tmp_path / "prepared"
    for split in ("train", "val"):  # no test split at all
        shutil.copytree(root / "prepared" / split, only / split)
    path = tmp_path / "m.pt"
    spec = _checkpoint(path)
    cal = calibrate_checkpoint(path, only, batch_size=16, device="cpu")
    assert temperature_of(load_checkpoint(path)) == cal.temperature
    model, _, _ = load_model(path)
    val_logits, val_labels = predict_logits(model, open_prepared(root / "prepared", "val"), spec.preprocessing,
                                            batch_size=16, device=torch.device("cpu"))
    assert fit_temperature(val_logits, val_labels) == pytest.approx(MAX_TEMPERATURE)
    assert not cal.fitted and cal.temperature == 1.0 and not has_temperature(load_checkpoint(path))
    assert "validation split too small / saturated (the fit ran into its bound" in cal.note
    assert f"on {len(val_labels)} images" in cal.note
    assert cal == measure_calibration(val_logits, val_labels, None, note=cal.note)
    test_logits, test_labels = predict_logits(model, open_prepared(root / "prepared", "test"), spec.preprocessing,
                                              batch_size=16, device=torch.device("cpu"))
    assert fit_temperature(test_logits, test_labels) != pytest.approx(fit_temperature(val_logits, val_labels), rel=1e-3)
    with pytest.raises(UserError, match=r"prepared/test"):  # asked for a split that is not there: named
        calibrate_checkpoint(path, only, split="test", device="cpu")


def test_predict_uses_the_checkpoint_temperature(prepared, tmp_path: Path):
    _, raw = prepared
    path = tmp_path / "m.pt"
    _checkpoint(path)
    images = sorted((raw / "test").rglob("*.jpg"))[:4]
    raw_probs = [{t["class"]: t["probability"] for t in r["top"]} for r in predict_images(path, images, top_k=3, device="cpu")]
    set_temperature(path, 3.0)
    results = predict_images(path, images, top_k=3, device="cpu")
    for plain, result in zip(raw_probs, results):
        calibrated = {t["class"]: t["probability"] for t in result["top"]}
        # softmax(z / T) is proportional to softmax(z) ** (1 / T)
        expected = {c: p ** (1 / 3.0) for c, p in plain.items()}
        expected = {c: v / sum(expected.values()) for c, v in expected.items()}
        assert calibrated == pytest.approx(expected, abs=1e-5)
        assert max(calibrated, key=calibrated.get) == max(plain, key=plain.get)  # same top class
        assert max(calibrated.values()) < max(plain.values())  # T > 1 softens


def test_a_temperature_is_used_only_where_the_fit_did_not_run_into_its_bound():
    """An over-confident model that is sometimes wrong has an optimum inside [0.05, 20]: used. A split
    it gets all right with a margin (NLL -> 0 as T -> 0), or all wrong (-> uniform, T -> inf), does not."""
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    logits = rng.normal(size=(60, 3))
    logits[np.arange(60), labels] += 2.0
    confident = logits * 4  # right on most, sharply: T > 1
    t, note = usable_temperature(confident, labels)
    assert note is None and t == fit_temperature(confident, labels) and 1 < t < MAX_TEMPERATURE
    separated = np.eye(3)[labels] * 5.0
    assert usable_temperature(separated, labels) == (None, usable_temperature(separated, labels)[1])
    assert "too small / saturated (every one of its 60 images is right)" in usable_temperature(separated, labels)[1]
    assert usable_temperature(np.eye(3)[(labels + 1) % 3] * 5.0, labels)[0] is None  # wrong everywhere
