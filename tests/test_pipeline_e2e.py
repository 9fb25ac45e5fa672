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
    """Only evaluation-type stages may depend on data/raw/test (the dataset's own val/ folder)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    readers = {name for name, st in stages.items() if any(str(d).startswith("data/raw/test") or d == "data/raw" for d in st.get("deps", []))}
    assert readers <= {"evaluate_scratch", "finetune", "compare"}, readers


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
