"""Shared fixtures: the ../shared real photos and a throw-away copy of this repository for real dvc runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inat_cnn.core.threads import split_cores

def pytest_configure(config: pytest.Config) -> None:
    """pytest -n N: the N workers (and every stage they run) split the cores. Set in the controller
    before it starts the workers, so each inherits it before it imports torch."""
    split = split_cores(getattr(config.option, "numprocesses", None) or 1)
    if split:  # empty where OMP_NUM_THREADS was set: the user's (or, in a worker, the controller's)
        os.environ.update(split, INAT_CNN_TESTS_SPLIT_CORES="1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def real_photos() -> Path:
    """../shared/real_photos, or a clean skip where it is absent (as on a user's machine)."""
    root = SHARED / "real_photos"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: real-photo tests run only beside the shared folder")
    return root


def tool_env() -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, so dvc stages find `python`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("GIT_AUTHOR_NAME", "inat-cnn tests")
    env.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "inat-cnn tests")
    env.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# tracked, not a pipeline output: what the report shows until `inat-cnn sweep report` replaces it
SWEEP_PLACEHOLDER = "plots/sweep/summary.json"


def copy_project(dest: Path) -> Path:
    """Copy the project's source files (tracked and untracked-not-ignored) and make it a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        outputs = rel.startswith(("metrics/", "plots/", "dvc.lock")) and rel != SWEEP_PLACEHOLDER
        if src.is_file() and not outputs:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], dest)
    return dest


def set_params(repo: Path, updates: dict[str, object]) -> None:
    """Set dotted keys (``train.epochs``) in the copy's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# Small enough that a whole `dvc repro` of the copy takes seconds on two CPU cores.
TINY_PARAMS = {
    "data.synthetic.train_per_class": 10,
    "data.synthetic.test_per_class": 3,
    "data.synthetic.min_side": 48,
    "data.synthetic.max_side": 72,
    "data.synthetic.classes": ["circles", "squares", "stripes"],
    "model.input_size": 32,
    "model.blocks": 3,
    "model.filters": 8,
    "model.dense_units": 16,
    "train.epochs": 2,
    "train.batch_size": 8,
    "prepare.side": 224,  # >= efficientnet_lite0's 224 px input
    "finetune.epochs": 1,
    "finetune.batch_size": 8,
    "evaluate.guided_backprop_neurons": 3,
}
