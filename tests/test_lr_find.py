"""`inat-cnn lr-find`: a real range test on a prepared train split, its suggestion, figure and curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import PLAIN_RECIPE, cli, params_with, train_config
from test_train import prepare, synthetic_raw  # noqa: F401  (fixture)

from inat_cnn.core.errors import FieldError
from inat_cnn.training.lr_find import lr_range_test

PARAMS = params_with({
    "seed": 3,
    "model": {"blocks": 4, "filters": 16, "dense_units": 64, "input_size": 64},
    "train": {**PLAIN_RECIPE, "batch_size": 16, "lr": 1.0e-3},
})


def test_lr_find_suggests_a_rate_below_the_loss_minimum_and_writes_its_figure(tmp_path: Path, synthetic_raw: Path):
    prepare(tmp_path, synthetic_raw)  # tmp_path/prepared, as the prepare stage writes data/prepared
    (tmp_path / "data").mkdir()
    (tmp_path / "prepared").rename(tmp_path / "data" / "prepared")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    out = cli("lr-find", "scratch", "--steps", "40", "--start", "1e-5", "--end", "10", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    curve = json.loads((tmp_path / "plots/lr_find/scratch.json").read_text())
    assert (tmp_path / "plots/lr_find/scratch.png").stat().st_size > 10_000
    lrs, losses = curve["lrs"], curve["smoothed_losses"]
    assert lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert len(lrs) < 40 or max(losses) > min(losses)  # it stopped at divergence, or ran every step
    best = min(range(len(losses)), key=losses.__getitem__)
    assert curve["suggested_lr"] == pytest.approx(lrs[best] / 10)
    assert min(losses) < losses[0]  # the loss fell before it rose
    assert f"suggested train.lr: {curve['suggested_lr']:.2g}" in out.stdout


def test_lr_find_without_the_prepared_data_or_with_bad_flags_is_one_clear_line(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    out = cli("lr-find", "scratch", cwd=tmp_path)
    assert out.returncode == 2 and "data/prepared" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    with pytest.raises(FieldError, match="start"):  # checked before anything is built
        lr_range_test(None, None, None, train_config(), seed=0, start=1.0, end=0.1)
    with pytest.raises(FieldError, match="steps"):
        lr_range_test(None, None, None, train_config(), seed=0, steps=3)
