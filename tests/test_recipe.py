"""The training recipe's pieces: the per-step warm-up + cosine schedule (with a late-starting group),
mixup/cutmix draws and targets, the weight average, flip TTA, and a pruning hook that ends a run cleanly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import replace, train_config
from test_train import FAST_TRAIN, SMALL_MODEL, SMALL_SIZE, prepare, synthetic_raw  # noqa: F401  (fixture)

from inat_cnn.core.config import TrainConfig
from inat_cnn.data.prepared import open_prepared
from inat_cnn.data.preprocessing import Preprocessing
from inat_cnn.evaluation.predictions import class_probs
from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.core.device import seed_everything
from inat_cnn.training.ema import WeightEMA
from inat_cnn.training.loop import fit
from inat_cnn.training.mixing import Mixer
from inat_cnn.training.optim import make_optimizer, make_scheduler


def _lrs(cfg: TrainConfig, steps_per_epoch: int, groups: list[dict]) -> list[list[float]]:
    optimizer = make_optimizer(cfg, groups)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    seen = []
    for _ in range(cfg.epochs * steps_per_epoch):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_warm_up_then_cosine_per_step_and_a_group_that_starts_later():
    cfg = train_config(lr=0.1, epochs=4, warmup_epochs=1, optimizer="sgd")
    head, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    lrs = _lrs(cfg, 5, [{"params": [head], "lr": 0.1}, {"params": [backbone], "lr": 0.01, "start_epoch": 2}])
    head_lrs, backbone_lrs = [r[0] for r in lrs], [r[1] for r in lrs]
    assert head_lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # linear warm-up over the first epoch's 5 steps
    assert head_lrs[5] == pytest.approx(0.1) and head_lrs == sorted(head_lrs[:5]) + sorted(head_lrs[5:], reverse=True)
    assert head_lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))  # cosine to ~0 at the end
    assert backbone_lrs[:10] == [0.0] * 10  # head-only epochs: the backbone does not move ...
    assert backbone_lrs[10:15] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01])  # ... then warms up itself
    assert _lrs(replace(cfg, warmup_epochs=0, schedule="none"), 3, [{"params": [head]}]) == [[0.1]] * 12


def test_mixing_draws_are_seeded_per_sample_and_targets_match_the_pixels():
    mixer = Mixer(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.75, num_classes=3)
    draws = mixer.draw(64, torch.Generator().manual_seed(5))
    again = mixer.draw(64, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip((draws.lam, draws.cut, draws.box), (again.lam, again.cut, again.box)))
    assert len(set(draws.lam.tolist())) > 30 and 0 < int(draws.cut.sum()) < 64  # per sample; both kinds
    untouched = draws.lam == 1
    assert 4 <= int(untouched.sum()) <= 30 and not draws.cut[untouched].any()  # about 1 - mix_prob of them

    x = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(64)])  # image i is all i
    y = torch.arange(64) % 3
    mixed, target = mixer(x, y, draws)
    partner = torch.arange(63, -1, -1)
    own_share = torch.where(partner == torch.arange(64), torch.ones(64), (mixed - partner[:, None, None, None].float()).mean((1, 2, 3)) / (torch.arange(64) - partner).float())
    assert target.sum(1) == pytest.approx(torch.ones(64))
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    expected = own_share[:, None] * one_hot + (1 - own_share[:, None]) * one_hot.flip(0)
    keep = partner != torch.arange(64)
    assert target[keep] == pytest.approx(expected[keep], abs=1e-5)  # the label mix is the pixel mix, cutmix boxes too
    assert torch.equal(mixed[untouched], x[untouched])
    assert torch.equal(Mixer(0.4, 1.0, 0.0, 3)(x, y, Mixer(0.4, 1.0, 0.0, 3).draw(64, torch.Generator()))[0], x)


def test_the_weight_average_warms_up_then_follows_with_the_epoch_time_constant():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = WeightEMA(model, ema_epochs=2.0, steps_per_epoch=10)
    assert ema.decay == pytest.approx(math.exp(-1 / 20))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(0.0)
    for _ in range(200):
        ema.update_parameters(model)
    assert 0 < ema.module.weight[0, 0].item() < 1e-3  # decayed towards the current weights


def test_flip_tta_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = ScratchCNN(SMALL_MODEL, 4).eval()
    x = torch.randn(3, 3, 64, 64)
    plain, tta = class_probs(model, x), class_probs(model, x, tta=True)
    assert tta == pytest.approx((plain + class_probs(model, x.flip(3))) / 2)
    assert not torch.allclose(plain, tta)


def _fit(root: Path, raw: Path, cfg: TrainConfig, **kwargs):
    prepared, names = prepare(root, raw)
    seed_everything(0)
    model = ScratchCNN(SMALL_MODEL, len(names))
    spec = ModelSpec(SCRATCH_ARCH, SMALL_MODEL.model_dump(), names, Preprocessing(SMALL_MODEL.input_hw, source_size=SMALL_SIZE))
    result = fit(model, spec, open_prepared(prepared, "train"), open_prepared(prepared, "val"), cfg, seed=0,
                 checkpoint_path=root / "model.pt", **kwargs)
    return result, model


def test_the_full_recipe_learns_and_is_deterministic_and_keeps_the_average(tmp_path: Path, synthetic_raw: Path):
    cfg = replace(FAST_TRAIN, epochs=6, warmup_epochs=1, label_smoothing=0.1, ema_epochs=1.0, mixup_alpha=0.2, cutmix_alpha=1.0)
    first, model = _fit(tmp_path / "a", synthetic_raw, cfg)
    second, _ = _fit(tmp_path / "b", synthetic_raw, cfg)
    timing = ("epoch_seconds", "train_seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in first.history] == \
           [{k: v for k, v in r.items() if k not in timing} for r in second.history]
    assert first.best_val_acc >= 0.5, first.history  # chance is 0.25
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=False)["model_state"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())  # the returned model is the kept average


def test_a_pruning_hook_ends_the_run_cleanly_after_its_epoch(tmp_path: Path, synthetic_raw: Path):
    seen = []
    result, _ = _fit(tmp_path, synthetic_raw, replace(FAST_TRAIN, epochs=5),
                     epoch_hook=lambda row: seen.append(row["epoch"]) or row["epoch"] == 2)
    assert seen == [1, 2] and result.pruned_after_epoch == 2 and result.epochs_run == 2
    assert result.summary()["pruned_after_epoch"] == 2 and (tmp_path / "model.pt").is_file()


def test_early_stopping_waits_for_patience_but_not_after_a_perfect_val_accuracy():
    from inat_cnn.training.resume import Progress

    row = {"loss": 1.0, "seconds": 1.0, "images": 10}
    progress = Progress()
    for epoch, acc in enumerate([0.5, 0.4, 0.45], start=1):
        progress.record(epoch, {**row, "acc": 0.5}, {**row, "acc": acc}, 0.1, patience=2)
    assert progress.stopped_early and progress.best_epoch == 1  # two epochs without a gain
    progress = Progress()
    assert progress.record(1, {**row, "acc": 0.9}, {**row, "acc": 0.9}, 0.1, patience=5) and not progress.stopped_early
    assert progress.record(2, {**row, "acc": 0.9}, {**row, "acc": 1.0}, 0.1, patience=5) and progress.stopped_early
