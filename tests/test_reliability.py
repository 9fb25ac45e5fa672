"""The remaining reliability gaps: silent params defaults, temps left by killed processes, bytes of
junk beyond an image's end, relative data sources in queued experiments, and stray temp folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cli, config, copy_project, one_error_line, project_copy, run, tool_env


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
    assert message in one_error_line(cli(*args, cwd=cwd))


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


# ------------------------------------------------------------------ 3. junk beyond an image's end


def _source_with(tmp_path: Path, extra: dict[str, bytes]) -> Path:
    from test_data_sources import inat_files, write_tree

    return write_tree(tmp_path / "src", {**inat_files(("Aves", "Fungi"), n_train=2, n_val=1), **extra})


def test_bytes_after_an_images_end_are_not_copied_into_data_raw(tmp_path: Path):
    from test_data_sources import jpeg_bytes, local_cfg

    from inat_cnn.data.raw import build_raw_dataset

    image = jpeg_bytes(7, size=(48, 40))
    src = _source_with(tmp_path, {"train/Aves/junk.jpg": image, "train/Fungi/video.jpg": image + os.urandom(300_000)})
    junk = src / "train" / "Aves" / "junk.jpg"
    os.truncate(junk, len(image) + (64 << 20))  # + 64 MiB of zeros, sparse on the source disk
    report = build_raw_dataset(local_cfg(src), 0, tmp_path / "raw", tmp_path / "dl")
    assert report["bad_files"] == [] and report["total"] == {"train": 6, "test": 2}
    for rel in ("train/Aves/junk.jpg", "train/Fungi/video.jpg"):
        copied = tmp_path / "raw" / rel
        assert copied.read_bytes() == image, rel  # the image, every byte of it, and nothing more


def test_a_zip_entry_with_bytes_after_the_image_is_extracted_cut_short(tmp_path: Path):
    import zipfile

    from test_data_sources import inat_files, jpeg_bytes, local_cfg

    from inat_cnn.data.raw import build_raw_dataset

    image = jpeg_bytes(3, size=(48, 40), fmt="PNG")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for rel, data in {**inat_files(), "train/Aves/x.png": image + os.urandom(200_000)}.items():
            archive.writestr(rel, data)
    build_raw_dataset(local_cfg(tmp_path / "photos.zip"), 0, tmp_path / "raw", tmp_path / "dl")
    assert (tmp_path / "raw" / "train" / "Aves" / "x.png").read_bytes() == image


def test_a_zip_entry_inflating_over_100_to_1_is_refused_before_anything_is_written(tmp_path: Path):
    import zipfile

    from test_data_sources import inat_files

    from inat_cnn.core.errors import UserError
    from inat_cnn.data.download import safe_extract_zip

    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, data in inat_files().items():
            archive.writestr(rel, data)
        with archive.open("train/Aves/zeros.jpg", "w", force_zip64=True) as entry:  # 256 MiB of zeros, ~250 KB packed
            for _ in range(256):
                entry.write(bytes(1 << 20))
    with pytest.raises(UserError, match=r"refusing to extract entry 'train/Aves/zeros.jpg': it inflates [\d,]+ bytes to "
                       r"268,435,456 \(over 100:1; photos compress less than 2:1\)"):
        safe_extract_zip(tmp_path / "bomb.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused on what the archive declares: nothing written


# ------------------------------------------------------------------ 4. a relative source in queued experiments


def test_workspace_root_is_the_folder_holding_dvcs_experiment_copies(tmp_path: Path):
    from inat_cnn.core.stage_runner import workspace_root

    assert workspace_root(tmp_path / "repo") == tmp_path / "repo"
    assert workspace_root(tmp_path / "repo/.dvc/tmp/exps/tmpab12") == tmp_path / "repo"
    assert workspace_root(tmp_path / "repo/.dvc/tmp/exps/standalone/tmpab12/sub") == tmp_path / "repo"


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["--temp", "--queue"])
def test_a_relative_source_works_in_temp_and_queued_experiments(how: str, tmp_path: Path):
    from test_data_sources import inat_files, write_tree

    write_tree(tmp_path / "photos", inat_files(("Aves", "Fungi"), n_train=3, n_val=1))
    repo = project_copy(tmp_path / "repo", {})
    run(["dvc", "exp", "run", how, "-n", "rel", "-S", "data.source=../photos", "download"], repo, timeout=300)
    if how == "--queue":
        run(["dvc", "exp", "run", "--run-all"], repo, timeout=300)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    (md5,) = _out_hashes(shown, "rel", "metrics/details/download.json")  # none where the experiment failed
    report = json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())  # the DVC-cached details
    assert report["source"] == "../photos" and report["total"] == {"train": 6, "test": 2}


def _out_hashes(node, name: str, path: str) -> list[str]:
    """The md5 of out ``path`` in every experiment called ``name`` of ``dvc exp show --json``."""
    if isinstance(node, list):
        return [found for item in node for found in _out_hashes(item, name, path)]
    if not isinstance(node, dict):
        return []
    if node.get("name") == name and isinstance(node.get("data"), dict):
        out = (node["data"].get("outs") or {}).get(path) or {}
        return [out["hash"]] if out.get("hash") else []
    return [found for value in node.values() for found in _out_hashes(value, name, path)]


# ------------------------------------------------------------------ 5. small ones


NO_WANDB = """
import os, sys
import yaml
from inat_cnn.core.config import FinetuneConfig, from_dict
from inat_cnn.models.pretrained.freezing import finetune_model
params = yaml.safe_load(open(sys.argv[1]))["finetune"]
finetune_model(from_dict(FinetuneConfig, {**params, "weights": "none"}, "finetune"), ["a", "b"], 224)
print("wandb imported" if "wandb" in sys.modules else "no wandb", sorted(os.listdir(os.environ["TMPDIR"])))
"""


def test_building_the_finetune_model_imports_no_wandb_and_makes_no_wandb_temps(tmp_path: Path):
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-c", NO_WANDB, str(REPO / "params.yaml")], cwd=tmp_path, env={**tool_env(), "TMPDIR": str(tmp_path / "tmp")},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no wandb"), proc.stdout
    assert not list((tmp_path / "tmp").glob("*wandb*"))


def test_wandb_still_imports_after_the_model_is_built():
    pytest.importorskip("wandb")
    from inat_cnn.models.pretrained.build import _import_timm

    _import_timm()
    import wandb  # noqa: F401  # logging.wandb: true needs it


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    from inat_cnn.core.config import ScratchModelConfig
    from inat_cnn.data.preprocessing import Preprocessing
    from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec, save_checkpoint
    from inat_cnn.models.scratch import ScratchCNN

    model = config(ScratchModelConfig, "model", blocks=2, filters=4, dense_units=8, input_size=16)
    spec = ModelSpec(SCRATCH_ARCH, model.model_dump(), ["a", "b"], Preprocessing((16, 16), source_size=16))
    save_checkpoint(tmp_path / "m.pt", ScratchCNN(model, 2).state_dict(), spec, epoch=1, metrics={})
    return tmp_path / "m.pt"


def test_predict_names_a_fifo_and_a_folder_given_as_checkpoint(checkpoint: Path, tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.jpg")
    line = one_error_line(cli("predict", checkpoint, tmp_path / "pipe.jpg"))
    assert line == f"error: {tmp_path / 'pipe.jpg'}: not a regular file: a named pipe (FIFO); give image files or folders of images"
    (tmp_path / "models").mkdir()
    from test_data_sources import jpeg_bytes

    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(1))
    line = one_error_line(cli("predict", tmp_path / "models", tmp_path / "photo.jpg"))
    assert line.startswith(f"error: {tmp_path / 'models'}: not a regular file: a folder, not a checkpoint file; give the .pt file")


@pytest.mark.parametrize("size", [[0, 0], [1, 1], [3, 5000]])
def test_impossible_model_input_sizes_are_one_line(size, tmp_path: Path):
    cwd = _params_with(tmp_path, lambda params: params["model"].update(input_size=size))
    assert "model.input_size" in one_error_line(cli("model-size", cwd=cwd))
