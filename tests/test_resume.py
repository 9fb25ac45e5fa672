"""Resume after an interruption: same metrics as an uninterrupted run, never from a foreign state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY_PARAMS, copy_tree, project_copy, replace, run, tool_env
from test_train import FAST_TRAIN, SMALL_MODEL, SMALL_SIZE, prepare, synthetic_raw  # noqa: F401  (fixture)

from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec
from inat_cnn.data.prepared import open_prepared
from inat_cnn.data.preprocessing import Preprocessing
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.core.device import seed_everything
from inat_cnn.training.loop import fit
from inat_cnn.training.resume import ResumeState, run_fingerprint


class Interrupted(Exception):
    pass


def _train(root: Path, raw: Path, cfg, *, resume: Path, stop_after: int | None = None):
    """Train through ``fit`` with a resume file; raise Interrupted during epoch ``stop_after + 1``."""
    prepared, names = prepare(root, raw)
    seed_everything(0)
    model = ScratchCNN(SMALL_MODEL, len(names))
    spec = ModelSpec(SCRATCH_ARCH, SMALL_MODEL.model_dump(), names, Preprocessing(SMALL_MODEL.input_hw, source_size=SMALL_SIZE))

    def log(row):  # called before that epoch's state is saved
        if stop_after is not None and row["epoch"] > stop_after:
            raise Interrupted

    state = ResumeState(resume, run_fingerprint(spec, cfg, 0, prepared))
    result = fit(model, spec, open_prepared(prepared, "train"), open_prepared(prepared, "val"), cfg, seed=0,
                 checkpoint_path=root / "model.pt", log_epoch=log, resume=state)
    return result, model


RECIPE = {"warmup_epochs": 1, "label_smoothing": 0.1, "ema_epochs": 1.0, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.8}


@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["plain", "warmup-smoothing-ema-mixing"])
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path, synthetic_raw: Path, capsys, recipe):
    cfg = replace(FAST_TRAIN, epochs=4, **recipe)
    full, full_model = _train(tmp_path / "full", synthetic_raw, cfg, resume=tmp_path / "full.resume")
    assert not (tmp_path / "full.resume").exists()  # a finished run leaves no resume state

    resume = tmp_path / "cut.resume"
    with pytest.raises(Interrupted):
        _train(tmp_path / "cut", synthetic_raw, cfg, resume=resume, stop_after=2)
    assert resume.is_file()
    capsys.readouterr()
    resumed, resumed_model = _train(tmp_path / "cut", synthetic_raw, cfg, resume=resume)
    out = capsys.readouterr().out
    assert "after epoch 2\n" in out and out.count("epoch 3/4:") == 1 and "epoch 1/4:" not in out
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "train_seconds", "images_per_s")} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert (resumed.best_epoch, resumed.best_val_acc) == (full.best_epoch, full.best_val_acc)
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert not resume.exists()


def test_a_resume_state_from_another_config_is_ignored(tmp_path: Path, synthetic_raw: Path, capsys):
    resume = tmp_path / "r.resume"
    with pytest.raises(Interrupted):
        _train(tmp_path / "a", synthetic_raw, replace(FAST_TRAIN, epochs=3), resume=resume, stop_after=1)
    capsys.readouterr()
    _train(tmp_path / "a", synthetic_raw, replace(FAST_TRAIN, epochs=3, lr=1e-3), resume=resume)
    out = capsys.readouterr().out
    assert "belongs to a run with other params" in out and "epoch 1/3:" in out and "resuming" not in out

    resume.write_bytes(b"garbage")
    _train(tmp_path / "a", synthetic_raw, replace(FAST_TRAIN, epochs=1), resume=resume)
    assert "ignoring unreadable resume file" in capsys.readouterr().out


KILL_PARAMS = {**TINY_PARAMS, "train.epochs": 5, "model.input_size": 64, "prepare.side": 64, "data.synthetic.train_per_class": 30}


@pytest.mark.e2e
def test_dvc_repro_killed_mid_training_resumes_and_matches_an_uninterrupted_run(tmp_path: Path):
    reference = project_copy(tmp_path / "reference", KILL_PARAMS)
    run(["dvc", "repro", "prepare"], reference)
    repo = copy_tree(reference, tmp_path / "killed")  # the same data stages, run once
    run(["dvc", "repro", "train_scratch"], reference)

    proc = subprocess.Popen(["dvc", "repro", "train_scratch"], cwd=repo, env=tool_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 2/5:"):
            os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's python: no cleanup runs
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert (repo / ".resume" / "train_scratch.pt").is_file()

    out = run(["dvc", "repro", "train_scratch"], repo).stdout
    assert "resuming from .resume/train_scratch.pt after epoch" in out, out
    assert "epoch 1/5:" not in out and "epoch 5/5:" in out
    assert not (repo / ".resume" / "train_scratch.pt").exists()

    def result(r: Path) -> dict:
        m = json.loads((r / "metrics/details/train_scratch.json").read_text())
        return {k: m[k] for k in ("best_epoch", "best_val_acc", "best_val_loss", "epochs_run")}

    assert result(repo) == result(reference)
    def values(r: Path, curve: str) -> list[str]:
        return [line.split("\t")[-1] for line in (r / "dvclive/train_scratch/plots/metrics" / curve).read_text().splitlines()]

    for curve in ("val/acc.tsv", "train/loss.tsv"):
        assert values(repo, curve) == values(reference, curve)
    a = torch.load(repo / "models/scratch.pt", weights_only=True)["model_state"]
    b = torch.load(reference / "models/scratch.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "Data and pipelines are up to date" in run(["dvc", "status", "train_scratch"], repo).stdout
