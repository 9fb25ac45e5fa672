"""Remote storage, as in the README: push every out to a local-folder remote, clone the repository
afresh, pull, and find the same results with nothing to re-run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import run

pytestmark = pytest.mark.e2e

CHECKPOINTS = ("models/scratch.pt", "models/finetune.pt")
UP_TO_DATE = "Data and pipelines are up to date."


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def md5s(root: Path) -> dict[str, str]:
    """{relative path: md5} of every file under the folder ``root``."""
    return {p.relative_to(root).as_posix(): md5(p) for p in sorted(root.rglob("*")) if p.is_file()}


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def test_push_then_pull_into_a_fresh_clone_gives_the_same_results(repo: Path, tmp_path: Path) -> None:
    """``repo``: the pipeline reproduced and committed (conftest)."""
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], repo)
    pushed = run(["dvc", "push"], repo).stdout
    assert "pushed" in pushed, pushed
    commit(repo, "the local remote")
    assert run(["dvc", "status", "--cloud"], repo).stdout.strip() == "Cache and remote 'local' are in sync."

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not any((clone / rel).exists() for rel in (*CHECKPOINTS, "data/raw", "data/split", "plots/scratch"))
    run(["dvc", "pull"], clone)
    assert run(["dvc", "status"], clone).stdout.strip() == UP_TO_DATE
    locked = {out["path"]: out["md5"] for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values()
              for out in stage.get("outs", [])}  # fmt: skip
    for rel in CHECKPOINTS:
        assert md5(clone / rel) == md5(repo / rel) == locked[rel], rel
    for rel in ("data/raw", "data/split", "plots"):
        assert md5s(clone / rel) == md5s(repo / rel) != {}, rel
    assert len(md5s(clone / "data/raw")) == 3 * (10 + 3)  # TINY_PARAMS: 3 classes x (10 train + 3 test)
    rerun = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in rerun, rerun

    # the models as DVC artifacts (dvc.yaml's artifacts:), fetched from the remote without a clone
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name, rel in (("scratch-cnn", "models/scratch.pt"), ("finetuned-efficientnet", "models/finetune.pt")):
        run(["gto", "register", name], repo)  # a version: the git tag <name>@v0.0.1 that `dvc artifacts get` resolves
        run(["dvc", "artifacts", "get", str(repo), name, "-o", f"{name}.pt"], fetched)
        assert md5(fetched / f"{name}.pt") == md5(repo / rel), name
