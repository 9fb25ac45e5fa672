"""The training loop, checkpoints and test evaluation on real (synthetic and real-photo) images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import config, replace, train_config
from PIL import Image

from inat_cnn.models.build import load_model
from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec, save_checkpoint
from inat_cnn.core.config import (
    EvaluateConfig,
    ScratchModelConfig,
    SyntheticConfig,
)
from inat_cnn.data.prepared import prepare_dataset, read_meta
from inat_cnn.data.preprocessing import BatchTransform, Preprocessing
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.core.errors import UserError
from inat_cnn.evaluation.evaluate import evaluate_checkpoint
from inat_cnn.evaluation.figures import draw_test_figures
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.core.device import seed_everything
from inat_cnn.training.loop import train_on_split

SMALL_MODEL = config(ScratchModelConfig, "model", blocks=4, filters=16, dense_units=64, dropout=0.1, input_size=64)
FAST_TRAIN = train_config(lr=3e-3, epochs=12, batch_size=16, early_stop_patience=12)
SMALL_SIZE = 80  # prepare.side for the 64 px models


def prepare(root: Path, raw: Path, seed: int = 0, size: int = SMALL_SIZE) -> tuple[Path, list[str]]:
    """As the stratified_split and prepare stages do: split ``raw/train`` into ``root/split`` and cache
    every split in ``root/prepared`` (kept when already there); return that folder and the class names."""
    if not (root / "prepared").is_dir():
        write_split(stratified_split(raw / "train", 0.25, seed, raw / "test"), root / "split")
        prepare_dataset(root / "split", raw / "train", raw / "test", root / "prepared", side=size, workers=2)
    return root / "prepared", read_meta(root / "prepared" / "train")["class_names"]


def train_small(root: Path, raw: Path, model_cfg=SMALL_MODEL, train_cfg=FAST_TRAIN, seed: int = 0):
    prepared, names = prepare(root, raw, seed)
    seed_everything(seed)
    model = ScratchCNN(model_cfg, len(names))
    spec = ModelSpec(SCRATCH_ARCH, model_cfg.model_dump(), names, Preprocessing(model_cfg.input_hw, source_size=SMALL_SIZE))
    result = train_on_split(
        model, spec, train_cfg, seed=seed, prepared_dir=prepared,
        checkpoint_path=root / "model.pt", live_dir=root / "live",
    )
    return result, spec


@pytest.fixture(scope="module")
def synthetic_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    cfg = SyntheticConfig(train_per_class=40, test_per_class=6, min_side=64, max_side=112,
                          classes=["a", "b", "c", "d"])
    generate_synthetic(cfg, 7, raw)
    return raw


def test_short_training_learns_well_above_chance_and_is_deterministic(tmp_path: Path, synthetic_raw: Path):
    first, _ = train_small(tmp_path / "1", synthetic_raw)
    second, _ = train_small(tmp_path / "2", synthetic_raw)
    assert first.best_val_acc >= 0.6, first.history  # chance is 0.25
    assert first.history == [
        {**row, "epoch_seconds": a["epoch_seconds"], "train_seconds": a["train_seconds"], "images_per_s": a["images_per_s"]}
        for row, a in zip(second.history, first.history)
    ]
    assert (tmp_path / "1" / "live" / "plots" / "metrics" / "val" / "acc.tsv").is_file()


def test_checkpoint_round_trip_and_evaluation_figures(tmp_path: Path, synthetic_raw: Path):
    result, spec = train_small(tmp_path, synthetic_raw, train_cfg=replace(FAST_TRAIN, epochs=2))
    model, loaded_spec, ckpt = load_model(tmp_path / "model.pt")
    assert loaded_spec == spec and ckpt["epoch"] == result.best_epoch
    assert ckpt["metrics"]["val_acc"] == pytest.approx(result.best_val_acc)

    plots = tmp_path / "plots"
    cfg = config(EvaluateConfig, "evaluate", guided_backprop_neurons=4)
    run = evaluate_checkpoint(tmp_path / "model.pt", tmp_path / "prepared", cfg, live_dir=tmp_path / "ev")
    draw_test_figures(run, cfg, plots)
    metrics = run.metrics
    assert metrics["num_images"] == 24 and set(metrics["per_class"]) == {"a", "b", "c", "d"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["calibration"]["temperature"] == 1.0  # trained by the library alone: no temperature fitted
    assert metrics["calibration"]["fitted"] is False and "not fitted" in metrics["calibration"]["note"]
    assert metrics["calibration"]["ece_before"] == metrics["calibration"]["ece_after"]
    for name in ("confusion_matrix", "predictions_grid", "filters", "feature_maps", "guided_backprop", "reliability"):
        with Image.open(plots / f"{name}.png") as img:
            img.verify()
    with Image.open(plots / "predictions_grid.png") as grid, Image.open(plots / "guided_backprop.png") as gbp:
        assert grid.height > grid.width  # 4 class rows x 3 columns
        assert gbp.width > gbp.height / 2  # 4 maps: a 2 x 2 grid, not one column 4 tall
    assert (tmp_path / "ev" / "plots" / "sklearn" / "confusion_matrix.json").is_file()


def test_a_checkpoint_of_another_architecture_is_a_clear_error(tmp_path: Path):
    spec = ModelSpec(SCRATCH_ARCH, SMALL_MODEL.model_dump(), ["a", "b"], Preprocessing((48, 48)))
    other = ScratchCNN(replace(SMALL_MODEL, filters=8), 2)
    save_checkpoint(tmp_path / "m.pt", other.state_dict(), spec, epoch=1, metrics={})
    with pytest.raises(UserError, match=r"m.pt: weights do not fit this architecture: features.0.conv.weight"):
        load_model(tmp_path / "m.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_augmentation_only_on_the_train_split():
    pre = Preprocessing((32, 48), source_size=64)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    evaluate = BatchTransform(pre, augment=False)
    assert torch.equal(evaluate(images), evaluate(images))  # no randomness
    train = BatchTransform(pre, augment=True)
    a = train(images, train.draw(4, torch.Generator().manual_seed(0)))
    b = train(images, train.draw(4, torch.Generator().manual_seed(1)))
    assert a.shape == b.shape == (4, 3, 32, 48) and not torch.equal(a, b)
    assert torch.equal(a, train(images, train.draw(4, torch.Generator().manual_seed(0))))  # the seed fixes the draws
    assert torch.equal(train(images), evaluate(images))  # without draws: the evaluation view


def test_flowers5_short_training_beats_chance_on_its_test_folder(tmp_path: Path, real_photos: Path):
    """Real photos: 5 classes, chance 0.2; a small CNN at 64 px for a few epochs clearly beats it."""
    from inat_cnn.core.config import DataConfig
    from inat_cnn.data.raw import build_raw_dataset

    raw = tmp_path / "raw"
    build_raw_dataset(config(DataConfig, "data", source=str(real_photos / "flowers5")), 0, raw, tmp_path / "dl")
    model_cfg = config(ScratchModelConfig, "model", blocks=4, filters=16, filter_organisation="double", dense_units=64, input_size=64)
    result, _ = train_small(tmp_path, raw, model_cfg, replace(FAST_TRAIN, epochs=6, lr=2e-3, batch_size=32))
    metrics = evaluate_checkpoint(tmp_path / "model.pt", tmp_path / "prepared", config(EvaluateConfig, "evaluate"),
                                  live_dir=tmp_path / "ev").metrics
    print(f"flowers5 scratch: val {result.best_val_acc:.3f} test {metrics['accuracy']:.3f}")
    assert metrics["accuracy"] > 0.3, metrics["accuracy"]


def test_wandb_mirror_logs_offline_without_network(tmp_path: Path, synthetic_raw: Path, monkeypatch):
    """logging.wandb: true mirrors every epoch to a W&B run, offline when no API key is set."""
    from inat_cnn.core.config import LoggingConfig

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    (tmp_path / "wandb_home").mkdir()
    prepared, names = prepare(tmp_path, synthetic_raw)
    model = ScratchCNN(SMALL_MODEL, len(names))
    spec = ModelSpec(SCRATCH_ARCH, SMALL_MODEL.model_dump(), names, Preprocessing(SMALL_MODEL.input_hw, source_size=SMALL_SIZE))
    train_on_split(
        model, spec, replace(FAST_TRAIN, epochs=2), seed=0, prepared_dir=prepared,
        checkpoint_path=tmp_path / "m.pt", live_dir=tmp_path / "live",
        logging=config(LoggingConfig, "logging", wandb=True), run_config={"train": {"lr": FAST_TRAIN.lr}},
    )
    runs = list((tmp_path / "wandb_home" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb_home").rglob("*"))[:20]
    assert list(runs[0].glob("run-*.wandb"))
