"""`predict_images` and the `inat-cnn predict` command, on a trained scratch checkpoint and on
efficientnet_lite0 checkpoints (real photos from ../shared)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from torchvision.models import ResNet18_Weights

from inat_cnn.models.checkpoint import ModelSpec, save_checkpoint
from inat_cnn.cli import main
from inat_cnn.core.config import ScratchModelConfig, SyntheticConfig
from inat_cnn.data.synthetic import generate_synthetic
from inat_cnn.core.errors import UserError
from inat_cnn.models.pretrained.build import build_pretrained
from inat_cnn.models.pretrained.weights import LITE0
from inat_cnn.evaluation.predict import predict_images
from conftest import cli, config, replace, run, tool_env
from test_train import FAST_TRAIN, train_small

CLASSES = ["circles", "squares", "stripes"]
TEST_PER_CLASS = 3
TINY_MODEL = config(ScratchModelConfig, "model", blocks=3, filters=8, dense_units=16, dropout=0.1, input_size=48)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, raw folder): a tiny scratch CNN trained 2 epochs on a small synthetic set."""
    root = tmp_path_factory.mktemp("predict")
    raw = root / "raw"
    cfg = SyntheticConfig(train_per_class=8, test_per_class=TEST_PER_CLASS, min_side=48, max_side=72, classes=CLASSES)
    generate_synthetic(cfg, 3, raw)
    train_small(root, raw, TINY_MODEL, replace(FAST_TRAIN, epochs=2, batch_size=8))
    return root / "model.pt", raw


def _check_top(result: dict, k: int, class_names: list[str]) -> None:
    probs = [t["probability"] for t in result["top"]]
    assert len(result["top"]) == k
    assert probs == sorted(probs, reverse=True), result
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-5, result
    names = [t["class"] for t in result["top"]]
    assert len(set(names)) == k and set(names) <= set(class_names), result


def test_predict_a_file_and_a_folder(scratch):
    ckpt, raw = scratch
    image = raw / "test" / "squares" / "0000.jpg"
    [one] = predict_images(ckpt, [image], top_k=2)
    assert one["path"] == str(image)
    _check_top(one, 2, CLASSES)

    results = predict_images(ckpt, [raw / "test", image], top_k=10)  # clamped to the 3 classes
    expected = sorted((raw / "test").rglob("*.jpg")) + [image]
    assert [r["path"] for r in results] == [str(p) for p in expected]
    assert len(expected) == 3 * TEST_PER_CLASS + 1
    for r in results:
        _check_top(r, 3, CLASSES)
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0, abs=1e-5)  # all classes shown
    # same image, same answer, whatever the batch (batched conv kernels may differ in the last bits)
    assert [t["class"] for t in results[-1]["top"][:2]] == [t["class"] for t in one["top"]]
    for a, b in zip(results[-1]["top"], one["top"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_bad_inputs_are_user_errors_naming_them(scratch, tmp_path):
    ckpt, raw = scratch
    image = raw / "test" / "circles" / "0000.jpg"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"empty: no image files"):
        predict_images(ckpt, [tmp_path / "empty"])
    with pytest.raises(UserError, match=r"nowhere\.jpg: no such file or folder"):
        predict_images(ckpt, [image, tmp_path / "nowhere.jpg"])
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    with pytest.raises(UserError, match=r"text\.jpg: cannot be read as an image: not an image"):
        predict_images(ckpt, [image, tmp_path / "text.jpg"])
    with pytest.raises(UserError, match=r"top_k = 0 is not allowed"):
        predict_images(ckpt, [image], top_k=0)


def test_cli_prints_top_k_per_image(scratch):
    ckpt, raw = scratch
    folder = raw / "test" / "stripes"
    proc = run(["inat-cnn", "predict", str(ckpt), str(folder), "--top-k", "2"], ckpt.parent, check=False)  # the console script
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == TEST_PER_CLASS * 3  # a path line and two class lines per image
    for i, path in enumerate(sorted(folder.glob("*.jpg"))):
        assert lines[3 * i] == str(path)
        for line in lines[3 * i + 1 : 3 * i + 3]:
            name, pct = line.split()
            assert name in CLASSES and pct.endswith("%") and 0.0 <= float(pct[:-1]) <= 100.0


def test_cli_json_output(scratch, capsys):
    ckpt, raw = scratch
    folder = raw / "test" / "stripes"
    main(["predict", str(ckpt), str(folder / "0001.jpg"), "--json"])  # in-process: the argv path is the same
    [result] = json.loads(capsys.readouterr().out)
    assert result["path"] == str(folder / "0001.jpg")
    _check_top(result, 3, CLASSES)


def test_cli_errors_exit_2_with_one_line(scratch, tmp_path):
    ckpt, raw = scratch
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello, I am text")
    proc = cli("predict", ckpt, raw / "test" / "circles" / "0000.jpg", bad)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}: cannot be read as an image") and "Traceback" not in proc.stderr

    proc = cli("predict", tmp_path / "missing.pt", bad)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {tmp_path / 'missing.pt'}: checkpoint not found"), proc.stderr


def _lite0_checkpoint(path: Path, class_names: list[str], imagenet_head: bool = False) -> Path:
    """An efficientnet_lite0 checkpoint with the ImageNet backbone and a new (untrained) head for
    ``class_names``, or the ImageNet head itself (``class_names`` = the 1000 ImageNet categories)."""
    pm = build_pretrained(LITE0, "DEFAULT", None if imagenet_head else len(class_names))
    spec = ModelSpec(LITE0, {"arch": LITE0}, class_names, pm.to_preprocessing(source_size=256))
    save_checkpoint(path, pm.model.state_dict(), spec, epoch=0, metrics={})
    return path


def test_lite0_checkpoint_on_real_photos(real_photos, tmp_path):
    """A 5-class lite0 checkpoint answers top-k over its own classes; with the ImageNet head kept
    (1000 classes) it must recognise the daisies of flowers5/val: that checks the checkpoint's own
    preprocessing (256 px resize, 224 px crop, mean = std = 0.5) end to end."""
    val = real_photos / "flowers5" / "val"
    flowers = sorted(p.name for p in val.iterdir() if p.is_dir())
    photo = sorted((val / "tulips").glob("*.jpg"))[0]
    [result] = predict_images(_lite0_checkpoint(tmp_path / "flowers.pt", flowers), [photo], top_k=5)
    _check_top(result, 5, flowers)
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1.0, abs=1e-5)

    imagenet = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    ckpt = _lite0_checkpoint(tmp_path / "imagenet.pt", imagenet, imagenet_head=True)
    daisies = sorted((val / "daisy").glob("*.jpg"))[:16]  # all 40: top-1 "daisy" for 30 (measured)
    results = predict_images(ckpt, daisies, top_k=3)
    assert [r["path"] for r in results] == [str(p) for p in daisies]
    top1 = [r["top"][0]["class"] for r in results]
    print(f"lite0 ImageNet head on flowers5/val/daisy: top-1 'daisy' for {top1.count('daisy')}/{len(top1)}")
    assert top1.count("daisy") >= 12, top1  # 15 of these 16 (measured)


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(scratch):
    """`inat-cnn predict ... | head -c 1`: the reader leaves after one byte, well before the ~1 MB of
    JSON (more than a pipe buffer) is written."""
    ckpt, raw = scratch
    folders = " ".join([f"'{raw / 'test'}'"] * 300)
    proc = subprocess.run(f"set -o pipefail; inat-cnn predict '{ckpt}' {folders} --json | head -c 1", env=tool_env(),
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert proc.stdout == "[" and proc.stderr == "", proc.stderr
    assert proc.returncode == 0


def test_tta_averages_each_image_with_its_mirror_image(scratch, tmp_path):
    from PIL import Image, ImageOps

    ckpt, raw = scratch
    photo = Image.open(raw / "test" / "squares" / "0000.jpg")
    side = min(photo.size)
    image = tmp_path / "square.png"  # square and lossless: the centre square of the mirror is the mirror exactly
    photo.crop((0, 0, side, side)).save(image)
    ImageOps.mirror(Image.open(image)).save(tmp_path / "mirror.png")
    plain, mirrored = predict_images(ckpt, [image, tmp_path / "mirror.png"], top_k=3)
    [tta] = predict_images(ckpt, [image], top_k=3, tta=True)
    by_class = lambda r: {t["class"]: t["probability"] for t in r["top"]}  # noqa: E731
    expected = {c: (p + by_class(mirrored)[c]) / 2 for c, p in by_class(plain).items()}
    assert by_class(tta) == pytest.approx(expected, abs=1e-4)
    assert by_class(tta) != pytest.approx(by_class(plain), abs=1e-4)
    out = cli("predict", ckpt, image, "--tta", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["top"][0]["class"] == tta["top"][0]["class"]
