"""Real `dvc` in a temporary git repository: the pipeline as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_PARAMS, copy_project, run, set_params

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("project"))
    set_params(repo, TINY_PARAMS)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project copy"], repo)
    return repo


def test_stage_deps_never_read_the_test_set_before_evaluation():
    """Only evaluation-type stages may depend on the test images (the dataset's own val/ folder);
    prepare caches them (decode + resize only) in an out of their own, data/prepared/test."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    test_data = ("data/raw/test", "data/raw", "data/prepared/test", "data/prepared")
    readers = {name for name, st in stages.items() if any(str(d).startswith(test_data[0]) or d in test_data for d in st.get("deps", []))}
    assert readers <= {"prepare", "evaluate_scratch", "finetune", "compare"}, readers
    assert "data/prepared/test" not in stages["train_scratch"]["deps"] and "data/raw/test" not in stages["train_scratch"]["deps"]


def test_data_stages_repro_then_nothing_changes_then_only_split_reruns(repo: Path):
    out = run(["dvc", "repro", "stratified_split"], repo).stdout
    assert "Running stage 'download'" in out and "Running stage 'stratified_split'" in out
    counts = json.loads((repo / "metrics/split.json").read_text())["counts"]
    assert sorted(counts) == ["circles", "squares", "stripes"]
    assert all(c["train"] + c["val"] == 10 for c in counts.values())

    again = run(["dvc", "repro", "stratified_split"], repo).stdout
    assert "Running stage" not in again, again
    status = run(["dvc", "status", "stratified_split"], repo).stdout
    assert "changed" not in status, status

    set_params(repo, {"data.val_fraction": 0.3})
    rerun = run(["dvc", "repro", "stratified_split"], repo).stdout
    assert "Running stage 'stratified_split'" in rerun
    assert "Running stage 'download'" not in rerun
    counts = json.loads((repo / "metrics/split.json").read_text())["counts"]
    assert all(c["val"] == 3 for c in counts.values())
    dag = run(["dvc", "dag"], repo).stdout
    assert "download" in dag and "stratified_split" in dag


def test_full_repro_is_reproducible_and_its_plots_render(repo: Path):
    out = run(["dvc", "repro"], repo).stdout
    for stage in ("train_scratch", "evaluate_scratch", "finetune", "compare"):
        assert f"Running stage '{stage}'" in out, out
    compared = json.loads((repo / "metrics/compare.json").read_text())["models"]
    assert set(compared) == {"scratch CNN", "efficientnet_lite0 (freeze_first_k)"}
    for row in compared.values():
        assert 0 <= row["test_accuracy"] <= 1 and row["params"] > 0 and row["flops_per_image"] > 0
        assert set(row["per_class_accuracy"]) == {"circles", "squares", "stripes"}
    report = (repo / "reports/compare.md").read_text()
    assert "scratch CNN" in report and "efficientnet_lite0" in report
    assert {p.name for p in (repo / "plots/compare").glob("*.png")} == {"learning_curves.png", "per_class_accuracy.png"}
    for name in ("model_scratch", "train_scratch", "evaluate_scratch", "finetune"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())
    for model in ("scratch", "finetune"):
        pngs = {p.name for p in (repo / "plots" / model).glob("*.png")}
        assert pngs == {"confusion_matrix.png", "predictions_grid.png", "filters.png", "feature_maps.png", "guided_backprop.png"}
    assert (repo / "dvc.lock").is_file()

    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again, again
    assert run(["dvc", "status"], repo).stdout.strip().startswith("Data and pipelines are up to date"), "status not clean"

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    flat = json.dumps(metrics)
    assert "evaluate_scratch.json" in flat and "finetune.json" in flat and "compare.json" in flat
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "Scratch accuracy (train vs val)" in html and "confusion" in html.lower()


def test_an_experiment_with_another_lr_shows_its_own_metrics(repo: Path):
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline run"], repo)
    out = run(["dvc", "exp", "run", "-S", "train.lr=1e-4", "-n", "lr-1e-4"], repo).stdout
    assert "Running stage 'train_scratch'" in out
    assert "Running stage 'download'" not in out and "Running stage 'finetune'" not in out
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = [e for row in rows for e in (row.get("experiments") or [])]
    names = {r["name"]: r for e in exps for r in e.get("revs", [])}
    assert "lr-1e-4" in names, json.dumps(rows)[:2000]
    data = names["lr-1e-4"]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 1e-4
    assert "accuracy" in json.dumps(data["metrics"]["metrics/evaluate_scratch.json"])


def test_a_finetune_experiment_with_freeze_all_trains_the_head_only(repo: Path):
    out = run(["dvc", "exp", "run", "-S", "finetune.strategy=freeze_all", "-n", "ft-freeze-all"], repo).stdout
    assert "Running stage 'finetune'" in out and "Running stage 'train_scratch'" not in out
    assert "freeze_all" in out
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    revs = {r["name"]: r for row in rows for e in (row.get("experiments") or []) for r in e.get("revs", [])}
    finetune = revs["ft-freeze-all"]["data"]["metrics"]["metrics/finetune.json"]["data"]
    assert finetune["strategy"] == "freeze_all"
    assert finetune["trainable_params"] == 1280 * 3 + 3  # EfficientNet-Lite0's head for the 3 classes
