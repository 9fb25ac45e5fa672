"""DistributedDataParallel under torchrun: 2 CPU processes with gloo train in lockstep, and the
train_scratch stage runs under torchrun as the README shows."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run, set_params
from test_pipeline_e2e import ran
from test_train import prepare

from inat_cnn.core.config import SyntheticConfig
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.prepared import open_prepared
from inat_cnn.data.synthetic import generate_synthetic

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    import torch

    from inat_cnn.models.checkpoint import SCRATCH_ARCH, ModelSpec
    from inat_cnn.core.config import ScratchModelConfig
    from inat_cnn.data.prepared import open_prepared
    from inat_cnn.data.preprocessing import Preprocessing
    from inat_cnn.models.scratch import ScratchCNN
    from inat_cnn.core.device import seed_everything
    from inat_cnn.training.loop import fit

    sys.path.insert(0, TESTS)  # conftest: configs from params.yaml
    from conftest import config, train_config

    prepared, out = Path(sys.argv[1]), Path(sys.argv[2])
    model_cfg = config(ScratchModelConfig, "model", blocks=3, filters=8, dense_units=16, input_size=32)
    cfg = train_config(lr=3e-3, epochs=2, batch_size=4, device="cpu")
    seed_everything(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    train, val = open_prepared(prepared, "train"), open_prepared(prepared, "val")
    model = ScratchCNN(model_cfg, len(train.class_names))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ModelSpec(SCRATCH_ARCH, model_cfg.model_dump(), train.class_names, Preprocessing((32, 32), source_size=40))
    result = fit(model, spec, train, val, cfg, seed=0, checkpoint_path=out / "model.pt")
    rank = int(os.environ["RANK"])
    torch.save({"final": model.state_dict(), "initial": initial, "history": result.history,
                "world_size": int(os.environ["WORLD_SIZE"])}, out / f"rank{rank}.pt")
    """
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    generate_synthetic(SyntheticConfig(train_per_class=12, test_per_class=2, min_side=40, max_side=64,
                                       classes=["circles", "squares", "stripes"]), 0, root / "raw")
    return prepare(root, root / "raw", 0, size=40)[0]


def test_shards_cover_every_training_image_once_per_epoch_with_equal_step_counts(prepared: Path):
    train = open_prepared(prepared, "train")
    assert len(train) % 2 == 1  # odd: the last rank's shard needs padding
    loaders = [BatchLoader(train, 4, torch.device("cpu"), None, shuffle=True, rank=r, world_size=2, pad=True) for r in (0, 1)]
    for loader in loaders:
        loader.set_epoch(7)
    orders = [loader.order() for loader in loaders]
    assert len(orders[0]) == len(orders[1]) and len(loaders[0]) == len(loaders[1])
    seen = sorted([*orders[0], *orders[1]])
    assert set(seen) == set(range(len(train))) and len(seen) == len(train) + 1  # one image padded in
    val = open_prepared(prepared, "val")
    val_orders = [BatchLoader(val, 4, torch.device("cpu"), None, rank=r, world_size=2).order() for r in (0, 1)]
    assert sorted([*val_orders[0], *val_orders[1]]) == list(range(len(val)))  # validation: exactly once, no padding


def test_two_gloo_processes_end_with_identical_weights(prepared: Path, tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("TESTS", repr(str(Path(__file__).parent)), 1))
    out = tmp_path / "out"
    out.mkdir()
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(prepared), str(out)], tmp_path, timeout=300)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for key, tensor in ranks[0]["final"].items():
        assert torch.equal(tensor, ranks[1]["final"][key]), key
    assert any(not torch.equal(ranks[0]["final"][k], ranks[0]["initial"][k]) for k in ranks[0]["initial"])  # it trained
    def curves(history):  # loss and accuracy are summed over both ranks; timings are each rank's own
        return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "train_seconds", "images_per_s")} for row in history]

    assert curves(ranks[0]["history"]) == curves(ranks[1]["history"]) and len(ranks[0]["history"]) == 2
    assert (out / "model.pt").is_file()  # rank 0 wrote the checkpoint


@pytest.mark.e2e
def test_train_processes_2_runs_under_torchrun_inside_dvc_repro(repo: Path):
    """`train.processes: 2`: the stage relaunches itself under torchrun (2 gloo processes on CPU) and
    DVC records the outputs itself: no torchrun by hand, no `dvc commit`. ``repo``: the reproduced
    project (conftest), so its data stages are up to date and train_scratch alone runs."""
    set_params(repo, {"train.processes": 2})
    proc = run(["dvc", "repro", "train_scratch"], repo, timeout=600)
    assert ran(proc.stdout) == ["train_scratch"], proc.stdout
    assert "starting 2 processes" in proc.stdout, proc.stdout
    assert proc.stdout.count("epoch 2/2:") == 1, proc.stdout  # rank 0 alone prints and writes
    metrics = json.loads((repo / "metrics/details/train_scratch.json").read_text())
    assert metrics["epochs_run"] == 2
    assert "Data and pipelines are up to date" in run(["dvc", "status", "train_scratch"], repo).stdout
