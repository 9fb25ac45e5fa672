"""The remaining reliability gaps: silent params defaults, temps left by killed processes, bytes of
junk beyond an image's end, relative data sources in queued experiments, and stray temp folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_project, run, set_params, tool_env

INAT_CNN = Path(sys.executable).parent / "inat-cnn"


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _params_with(tmp_path: Path, change) -> Path:
    """The shipped params.yaml, changed by ``change(params)``, written to ``tmp_path``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


# ------------------------------------------------------------------ 1. no silent defaults


def _set(key, value):
    def change(params):
        params[key] = value
    return change


def _drop(key):
    return lambda params: params.pop(key)


def _null_nested(params):
    params["data"]["synthetic"] = None


@pytest.mark.parametrize(
    ("stage", "change", "message"),
    [
        ("train_scratch.py", _set("train", None), "params: train is missing or null"),
        ("finetune.py", _drop("finetune"), "params: finetune is missing or null"),
        ("download.py", _null_nested, "params: data.synthetic is missing or null"),
        ("download.py", _drop("seed"), "params: seed is missing or null"),
        ("download.py", _set("trian", {"lr": 0.1}), "params: unknown top-level key 'trian'"),
    ],
    ids=["train-null", "finetune-left-out", "nested-null", "seed-left-out", "misspelt-section"],
)
def test_a_missing_or_null_section_or_an_unknown_key_is_one_line_in_the_stages(stage, change, message, tmp_path: Path):
    cwd = _params_with(tmp_path, change)
    proc = subprocess.run([sys.executable, str(REPO / "stages" / stage)], cwd=cwd, env=tool_env(),
                          capture_output=True, text=True, timeout=120)
    assert message in one_error_line(proc)
    assert not (cwd / "data").exists() and not (cwd / "models").exists()  # nothing ran


@pytest.mark.parametrize(
    ("args", "change", "message"),
    [
        (["model-size"], _set("model", None), "params: model is missing or null"),
        (["lr-find", "scratch"], _drop("train"), "params: train is missing or null"),
        (["lr-find", "finetune"], _set("trian", None), "params: unknown top-level key 'trian'"),
    ],
    ids=["model-size-null", "lr-find-left-out", "lr-find-misspelt"],
)
def test_a_missing_or_null_section_or_an_unknown_key_is_one_line_in_the_commands(args, change, message, tmp_path: Path):
    cwd = _params_with(tmp_path, change)
    proc = subprocess.run([str(INAT_CNN), *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert message in one_error_line(proc)


# ------------------------------------------------------------------ 2. temps of killed processes


WRITER = """
import sys, time
from inat_cnn.core.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.mkdir()
    (tmp / "half.bin").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    time.sleep(120)
"""


def _writer(repo: Path, target: str) -> subprocess.Popen:
    """A process holding an atomic-write temp of ``target`` open (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, target], cwd=repo, env=tool_env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc (Linux)")
def test_any_stage_removes_the_temps_of_killed_writers_zombies_included_and_keeps_live_ones(tmp_path: Path):
    repo = copy_project(tmp_path / "repo")
    killed = [_writer(repo, "data/raw"), _writer(repo, "data/prepared/test"), _writer(repo, "models/scratch.pt")]
    live = _writer(repo, "metrics/prepare.json")
    try:
        for proc in killed:
            proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_state(p.pid) != "Z" for p in killed):  # killed, not reaped: zombies, as under a busy parent
            assert time.monotonic() < deadline
            time.sleep(0.01)
        temps = lambda: sorted(p.relative_to(repo).as_posix() for p in repo.rglob(".*.tmp"))  # noqa: E731
        assert len(temps()) == 4
        # a stage that writes none of these (it fails for want of data/raw, after the scan)
        proc = subprocess.run([sys.executable, "stages/stratified_split.py"], cwd=repo, env=tool_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "data/raw" in proc.stderr, proc.stderr
        left = temps()
        assert len(left) == 1 and left[0].startswith(f"metrics/.prepare.json.{live.pid}."), left
    finally:
        for proc in (*killed, live):
            proc.kill()
            proc.wait()
