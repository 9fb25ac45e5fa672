"""The decode-once cache (prepare stage) and the on-device batch transforms, against torchvision's own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, params_with, run
from torchvision.ops import roi_align
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from inat_cnn.core.config import SyntheticConfig
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.images import decode_rgb
from inat_cnn.data.prepared import open_prepared, prepare_dataset, read_meta
from inat_cnn.data.preprocessing import (
    AugmentDraws,
    BatchTransform,
    Preprocessing,
    square_image,
)
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.core.errors import UserError

CLASSES = ["circles", "squares", "stripes"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate_synthetic(SyntheticConfig(train_per_class=6, test_per_class=2, min_side=40, max_side=90, classes=CLASSES), 3, root)
    return root


@pytest.fixture(scope="module")
def prepared(raw: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    write_split(stratified_split(raw / "train", 0.25, 0, raw / "test"), root / "split")
    prepare_dataset(root / "split", raw / "train", raw / "test", root / "prepared", side=48, workers=2)
    return root / "prepared"


def test_every_split_holds_each_image_once_as_its_decoded_square(prepared: Path, raw: Path):
    counts = {}
    for name, source in (("train", "train"), ("val", "train"), ("test", "test")):
        split = open_prepared(prepared, name)
        counts[name] = len(split)
        assert split.class_names == CLASSES and split.images.shape == (len(split), 3, 48, 48)
        assert isinstance(split.images, np.memmap) and not split.images.flags.writeable  # read in place, never copied
        for i in (0, len(split) - 1):
            expected = square_image(decode_rgb(raw / source / split.paths[i]), 48)
            assert torch.equal(torch.from_numpy(split.image(i)), expected), split.paths[i]
            assert CLASSES[split.labels[i]] == split.paths[i].split("/")[0]
    assert counts == {"train": 13, "val": 5, "test": 6}
    assert read_meta(prepared / "test") == {"format": 2, "split": "test", "side": 48, "class_names": CLASSES, "count": 6}


def test_a_damaged_cache_or_a_missing_one_is_a_clear_error(prepared: Path, tmp_path: Path):
    with pytest.raises(UserError, match=r"meta.json: prepared data not found; run `dvc repro prepare`"):
        open_prepared(tmp_path, "train")
    broken = tmp_path / "broken"
    (broken / "train").mkdir(parents=True)
    for name in ("meta.json", "items.csv"):
        (broken / "train" / name).write_bytes((prepared / "train" / name).read_bytes())
    np.save(broken / "train" / "images.npy", np.zeros((2, 3, 48, 48), np.uint8))
    with pytest.raises(UserError, match=r"images.npy: holds uint8 \(2, 3, 48, 48\), expected uint8 \(13, 3, 48, 48\)"):
        open_prepared(broken, "train")


def test_a_model_larger_than_the_cached_squares_is_refused_naming_prepare_side():
    with pytest.raises(UserError, match=r"takes 224x224 input but the prepared squares are 128 px.* prepare.side to at least 256"):
        Preprocessing((224, 224), resize_size=256, source_size=128).check_source("the efficientnet_lite0 model")


def test_pretrained_eval_view_equals_torchvisions_resize_and_centre_crop(raw: Path):
    """Cache square (256) + evaluation transform == v2 Resize(256) + CenterCrop(224) + Normalize of the
    image's centre square, exactly. (The cache crops the square before resizing, which is cheaper; on the
    whole image, Resize(256) first places the crop window up to half a source pixel elsewhere: a mean
    difference of 2.4/255 on the hymenoptera photos, more on this 3x-upscaled synthetic one.)"""
    pre = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize_size=256, source_size=256)
    image = decode_rgb(next(iter(sorted((raw / "train" / "circles").iterdir()))))
    side = min(image.shape[-2:])
    reference = v2.Compose([v2.CenterCrop([side, side]), v2.Resize(256, antialias=True), v2.CenterCrop([224, 224]),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])(image)
    ours = BatchTransform(pre, augment=False)(square_image(image, 256)[None])[0]
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_a_mirrored_box_samples_the_mirror_image():
    images = torch.rand(2, 3, 40, 50)
    rois = torch.tensor([[0, 3.2, 4.1, 40.7, 33.3], [1, 0.0, 0.0, 50.0, 40.0]])
    straight = roi_align(images, rois, (20, 30), 1.0, 1, True)
    mirrored = roi_align(images, rois[:, [0, 3, 2, 1, 4]], (20, 30), 1.0, 1, True)
    torch.testing.assert_close(mirrored, straight.flip(-1))


def test_colour_jitter_matches_torchvisions_brightness_contrast_saturation():
    """With factors that keep every pixel in range (no clipping), the one-matrix jitter equals v2's."""
    torch.manual_seed(0)
    images = (torch.rand(3, 3, 24, 24) * 80 + 90).round().to(torch.uint8)  # mid-range pixels
    pre = Preprocessing((24, 24), source_size=24)
    whole = torch.tensor([[0.0, 0.0, 24.0, 24.0]]).repeat(3, 1)  # no crop, no flip
    jitter = torch.tensor([[1.1, 0.9, 1.2], [0.85, 1.15, 0.8], [1.0, 1.0, 1.0]])  # brightness, contrast, saturation
    ours = BatchTransform(pre, augment=True)(images, AugmentDraws(whole, jitter))
    for i in range(3):
        b, c, s = jitter[i].tolist()
        x = TF.to_dtype(images[i], torch.float32, scale=True)
        x = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s)
        expected = TF.normalize(x, list(pre.mean), list(pre.std))
        torch.testing.assert_close(ours[i], expected, rtol=0, atol=1e-4)  # float rounding; a wrong map is off by > 1e-2


def test_batches_visit_every_image_once_and_the_seed_fixes_order_and_augmentation(prepared: Path):
    split = open_prepared(prepared, "train")
    transform = BatchTransform(Preprocessing((32, 32), source_size=48), augment=True)
    loader = BatchLoader(split, 4, torch.device("cpu"), transform, shuffle=True)

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader.set_epoch(seed)
        batches = list(loader)
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    x1, y1 = epoch(1)
    assert x1.shape == (13, 3, 32, 32) and len(loader) == 4
    assert sorted(y1.tolist()) == sorted(split.labels.tolist())
    x1b, y1b = epoch(1)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    x2, y2 = epoch(2)
    assert not torch.equal(x1, x2)
    plain = BatchLoader(split, 5, torch.device("cpu"), None)
    assert torch.equal(torch.cat([x for x, _ in plain]), torch.from_numpy(np.array(split.images)))  # in order, unchanged


def test_prepare_stage_reports_its_output(prepared: Path, tmp_path: Path, raw: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").symlink_to(raw)
    (tmp_path / "data" / "split").symlink_to(prepared.parent / "split")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_with({"prepare": {"side": 32, "workers": 1}})))
    run([sys.executable, str(REPO / "stages" / "prepare.py")], tmp_path)
    report = json.loads((tmp_path / "metrics" / "details" / "prepare.json").read_text())
    assert report["counts"] == {"train": 13, "val": 5, "test": 6} and report["side"] == 32
    assert report["bytes"] == 24 * 3 * 32 * 32 + 3 * 128  # three .npy headers of 128 bytes
    assert sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir()) == ["test", "train", "val"]  # no temp left
