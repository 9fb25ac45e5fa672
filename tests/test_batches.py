"""One batch order: the host (memmap) and device-resident loader paths, and a mixed prepared cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inat_cnn.core.config import SyntheticConfig
from inat_cnn.core.errors import UserError
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.prepared import open_prepared, open_prepared_splits, prepare_dataset
from inat_cnn.data.preprocessing import BatchTransform, Preprocessing
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.data.synthetic import generate_synthetic

CLASSES = ["circles", "squares", "stripes"]


def _prepare(root: Path, side: int) -> Path:
    raw = root / "raw"
    generate_synthetic(SyntheticConfig(train_per_class=7, test_per_class=2, min_side=40, max_side=80, classes=CLASSES), 5, raw)
    write_split(stratified_split(raw / "train", 0.25, 0, raw / "test"), root / "split")
    prepare_dataset(root / "split", raw / "train", raw / "test", root / "prepared", side=side, workers=1)
    return root / "prepared"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return _prepare(tmp_path_factory.mktemp("batches"), 40)


def _epoch(loader: BatchLoader, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(seed)
    return list(loader)


def test_host_and_resident_paths_give_the_same_batches_in_the_same_order(prepared: Path):
    split = open_prepared(prepared, "train")
    transform = BatchTransform(Preprocessing((32, 32), source_size=40), augment=True)
    host = BatchLoader(split, 4, torch.device("cpu"), transform, shuffle=True, resident=False)
    resident = BatchLoader(split, 4, torch.device("cpu"), transform, shuffle=True, resident=True)
    assert host.images is None and resident.images is not None
    for seed in (3, 4):
        a, b = _epoch(host, seed), _epoch(resident, seed)
        assert len(a) == len(b) == len(host)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb)
            assert torch.equal(xa, xb)  # same image, same crop, flip and colour draw
        order = torch.cat([y for _, y in a])
        assert order.tolist() != sorted(order.tolist())  # shuffled across batches and inside them


def test_a_cache_mixed_from_two_prepare_runs_is_a_clear_error(prepared: Path, tmp_path: Path):
    other = _prepare(tmp_path / "other", 48)
    mixed = tmp_path / "mixed"
    shutil.copytree(prepared, mixed)
    shutil.rmtree(mixed / "val")
    shutil.copytree(other / "val", mixed / "val")  # as a prepare killed between splits leaves it
    with pytest.raises(UserError, match=r"do not match: train 40 px, val 48 px.*dvc repro -f prepare"):
        open_prepared_splits(mixed, ("train", "val"))
    with pytest.raises(UserError, match=r"train 40 px, val 40 px; the model was built for 48 px"):
        open_prepared_splits(prepared, ("train", "val"), side=48)
    assert [s.side for s in open_prepared_splits(prepared, ("train", "val", "test"), side=40)] == [40, 40, 40]
    assert json.loads((prepared / "val" / "meta.json").read_text())["side"] == 40
