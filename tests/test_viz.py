"""Evaluation figures: PNG validity, grid geometry, and guided back-propagation correctness."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from inat_cnn.viz.canvas import grid_shape, to_display_image
from inat_cnn.viz.filters import feature_map_grid, filter_grid, filter_image
from inat_cnn.viz.guided_backprop import (
    gradient_to_display,
    guided_backprop,
    guided_backprop_grid,
    top_channels,
    vanilla_gradient,
)
from inat_cnn.viz.predictions import (
    CORRECT_COLOUR,
    WRONG_COLOUR,
    Prediction,
    confusion_matrix_png,
    prediction_grid,
    select_grid_samples,
)
from inat_cnn.viz.probe import first_conv, layer_activations

NAMES = ["Amphibia", "Animalia", "Arachnida", "Aves", "Fungi", "Insecta", "Mammalia", "Mollusca", "Plantae", "Reptilia"]


# ---------------------------------------------------------------- helpers


def grid_geometry(fig: Figure) -> tuple[int, int]:
    """(rows, cols) of the subplot grid; every axes of the figure must belong to it."""
    shapes = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes}
    assert len(shapes) == 1, shapes
    rows, cols = shapes.pop()
    assert len(fig.axes) == rows * cols
    return rows, cols


def assert_png(path, fig: Figure) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert (width, height) == pytest.approx(tuple(fig.get_size_inches() * fig.dpi), abs=2)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def image_count(ax) -> int:
    return len(ax.get_images())


def tiny_cnn(act: type[nn.Module] = nn.ReLU, inplace: bool = False, batch_norm: bool = True) -> nn.Sequential:
    """A stand-in for the scratch CNN: ``features`` of conv/bn/act/pool blocks, then a classifier."""
    def block(cin: int, cout: int) -> nn.Sequential:
        parts = [("conv", nn.Conv2d(cin, cout, 3, padding=1))]
        if batch_norm:
            parts.append(("bn", nn.BatchNorm2d(cout)))
        parts += [("act", act(inplace=True) if inplace else act()), ("pool", nn.MaxPool2d(2))]
        return nn.Sequential(OrderedDict(parts))

    torch.manual_seed(0)
    features = nn.Sequential(block(3, 8), block(8, 8), block(8, 6))
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    return nn.Sequential(OrderedDict([("features", features), ("classifier", classifier)]))


def manual_guided(layers: list[nn.Module], x: torch.Tensor, channel: int) -> torch.Tensor:
    """Guided backprop by hand, one layer at a time: after each activation's backward, keep only g > 0.

    For ReLU the activation's backward is ``g * (input > 0)``, so this is Springenberg's
    ``g * (input > 0) * (g > 0)``.
    """
    inputs, h = [], x
    for layer in layers:
        inputs.append(h.detach().requires_grad_(True))
        h = layer(inputs[-1])
    (grad,) = torch.autograd.grad(h[0, channel].amax(), inputs[-1])
    for layer, layer_input in zip(reversed(layers[:-1]), reversed(inputs[:-1])):
        (grad,) = torch.autograd.grad(layer(layer_input), layer_input, grad)
        if not isinstance(layer, nn.Conv2d):
            grad = grad.clamp(min=0)
    return grad[0]


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 16, 16)


# ---------------------------------------------------------------- layout and images


@pytest.mark.parametrize("count, shape", [(64, (8, 8)), (32, (4, 8)), (16, (4, 4)), (48, (6, 8)),
                                          (10, (3, 4)), (33, (5, 7)), (7, (2, 4)), (3, (1, 3)), (1, (1, 1))])
def test_grid_shape_is_near_square_without_empty_rows(count, shape):
    rows, cols = grid_shape(count)
    assert (rows, cols) == shape
    assert rows * cols >= count > (rows - 1) * cols


def test_to_display_image_accepts_uint8_hwc_and_float_chw():
    hwc = np.zeros((5, 7, 3), np.uint8)
    assert to_display_image(hwc).shape == (5, 7, 3) and to_display_image(hwc).dtype == np.uint8
    chw = torch.full((3, 5, 7), 2.0)
    out = to_display_image(chw)
    assert out.shape == (5, 7, 3) and out.max() == 1.0
    assert to_display_image(torch.zeros(1, 5, 7)).shape == (5, 7)
    with pytest.raises(ValueError):
        to_display_image(np.zeros((4, 5, 7)))


# ---------------------------------------------------------------- predictions


def test_select_grid_samples_takes_the_first_of_each_class_in_order():
    labels = [2, 0, 2, 1, 0, 2, 2, 0, 0]
    assert select_grid_samples(labels, num_classes=4, per_class=3) == [[1, 4, 7], [3], [0, 2, 5], []]
    assert select_grid_samples(labels, 4, 3) == select_grid_samples(list(labels), 4, 3)
    with pytest.raises(ValueError, match="outside"):
        select_grid_samples([0, 5], num_classes=3)


def make_rows(counts: list[int], wrong_every: int = 2) -> list[list[Prediction]]:
    rng = np.random.default_rng(0)
    rows = []
    for label, count in enumerate(counts):
        row = []
        for k in range(count):
            pred = (label + 1) % len(counts) if k % wrong_every == 1 else label
            image = (rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) if k % 2
                     else torch.rand(3, 12, 12))  # both accepted formats
            row.append(Prediction(image, label, pred, float(rng.uniform(0.2, 1.0))))
        rows.append(row)
    return rows


@pytest.mark.parametrize("classes", [10, 5])
def test_prediction_grid_has_one_row_per_class(tmp_path, classes):
    rows = make_rows([3] * classes)
    out = tmp_path / "grid.png"
    fig = prediction_grid(rows, NAMES[:classes], out, cols=3)
    assert grid_geometry(fig) == (classes, 3)
    assert_png(out, fig)
    axes = np.array(fig.axes).reshape(classes, 3)
    for label, (row, ax_row) in enumerate(zip(rows, axes)):
        assert ax_row[0].get_ylabel() == NAMES[label]
        for p, ax in zip(row, ax_row):
            colour = CORRECT_COLOUR if p.correct else WRONG_COLOUR
            assert ax.title.get_text() == (f"true: {NAMES[p.true_label]}\npred: {NAMES[p.pred_label]} "
                                           f"({p.confidence:.0%})")
            assert ax.title.get_color() == colour
            assert all(spine.get_edgecolor() == to_rgba(colour) for spine in ax.spines.values())


def test_prediction_grid_leaves_blank_cells_for_short_classes(tmp_path):
    rows = make_rows([3, 1, 0, 3, 2])
    fig = prediction_grid(rows, NAMES[:5], tmp_path / "grid.png")  # cols defaults to the longest row
    assert grid_geometry(fig) == (5, 3)
    axes = np.array(fig.axes).reshape(5, 3)
    assert [[image_count(ax) for ax in row] for row in axes] == [[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 0]]
    assert "no test images" in [t.get_text() for t in axes[2, 0].texts]
    assert axes[2, 0].get_ylabel() == NAMES[2]


def test_prediction_grid_rejects_inconsistent_rows(tmp_path):
    rows = make_rows([2, 2])
    with pytest.raises(ValueError, match="one row per class"):
        prediction_grid(rows, NAMES[:3], tmp_path / "g.png")
    with pytest.raises(ValueError, match="columns"):
        prediction_grid(rows, NAMES[:2], tmp_path / "g.png", cols=1)
    with pytest.raises(ValueError, match="holds an image of class"):
        prediction_grid([rows[1], rows[0]], NAMES[:2], tmp_path / "g.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("normalise", [False, True])
def test_confusion_matrix_png_annotates_every_cell(tmp_path, normalise):
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    out = tmp_path / "cm.png"
    out.write_bytes(b"old")  # replaced atomically
    fig = confusion_matrix_png(cm, NAMES[:3], out, normalise=normalise)
    assert_png(out, fig)
    ax = fig.axes[0]
    cells = [t.get_text() for t in ax.texts]
    expected = (["0.83", "0.17", "0.00", "0.40", "0.60", "0.00", "0.00", "0.00", "0.00"] if normalise
                else ["5", "1", "0", "2", "3", "0", "0", "0", "0"])
    assert cells == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES[:3]
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES[:3]
    assert ax.get_xticklabels()[0].get_rotation() == 45
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")


# ---------------------------------------------------------------- filters and feature maps


@pytest.mark.parametrize("count, in_channels, shape", [(64, 3, (8, 8)), (32, 3, (4, 8)), (16, 8, (4, 4)), (10, 3, (3, 4))])
def test_filter_grid_geometry(tmp_path, count, in_channels, shape):
    weight = torch.randn(count, in_channels, 3, 3)
    out = tmp_path / "filters.png"
    fig = filter_grid(weight, out)
    assert grid_geometry(fig) == shape
    assert_png(out, fig)
    assert sum(image_count(ax) for ax in fig.axes) == count
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == ((48, 48, 3) if in_channels == 3 else (48, 48))


def test_filter_image_normalises_each_filter_and_upsamples_nearest():
    weight = torch.tensor([[[-3.0, 0.0, 3.0]] * 3] * 3)  # (3, 3, 3)
    rgb = filter_image(weight)
    assert rgb.shape == (48, 48, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    assert (rgb[:, :16] == 0).all() and (rgb[:, 32:] == 1).all()  # 16×16 blocks per weight
    gray = filter_image(torch.randn(5, 7, 7) * 100)
    assert gray.shape == (49, 49) and gray.min() == 0.0 and gray.max() == 1.0


def test_first_conv_and_layer_activations_are_generic(image):
    model = tiny_cnn()
    assert first_conv(model) is model.features[0].conv
    model.train()
    acts = layer_activations(model, image[0], model.features[1])
    assert acts.shape == (8, 4, 4) and model.training
    assert not acts.requires_grad


@pytest.mark.parametrize("with_image, shape", [(False, (4, 8)), (True, (5, 7))])
def test_feature_map_grid_one_panel_per_channel(tmp_path, image, with_image, shape):
    acts = torch.randn(32, 6, 6)
    acts[3] = 0  # a dead channel must not break the colour scale
    out = tmp_path / "fmaps.png"
    fig = feature_map_grid(acts, out, image=image[0] if with_image else None)
    assert grid_geometry(fig) == shape
    assert_png(out, fig)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 32 + with_image
    assert {im.get_cmap().name for im in images[with_image:]} == {"viridis"}
    assert fig.axes[0].get_title() == ("input" if with_image else "ch 0")


# ---------------------------------------------------------------- guided backprop


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU, "shared_relu"])
def test_guided_backprop_matches_a_manual_layerwise_computation(image, act):
    torch.manual_seed(0)
    shared = nn.ReLU()
    make_act = (lambda: shared) if act == "shared_relu" else act  # one ReLU called twice, as in ResNet blocks
    layers = [nn.Conv2d(3, 5, 3, padding=1), make_act(), nn.Conv2d(5, 6, 3, padding=1), make_act(),
              nn.Conv2d(6, 4, 3, padding=1)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    target = layers[-1]
    channels = [0, 3, 1]
    guided = guided_backprop(model, image, target, channels)
    vanilla = vanilla_gradient(model, image, target, channels)
    assert guided.shape == vanilla.shape == (3, 3, 16, 16)
    for i, channel in enumerate(channels):
        torch.testing.assert_close(guided[i], manual_guided(layers, image, channel))
    assert guided.abs().sum() > 0
    assert not torch.allclose(guided, vanilla)


def test_guided_backprop_leaves_the_model_as_it_was(image):
    model = tiny_cnn()
    model.train()
    model.features[0].bn.eval()  # a frozen BN inside a training model keeps its own mode
    before = vanilla_gradient(model, image, model.features[2], [0, 1])
    guided = guided_backprop(model, image, model.features[2], [0, 1])
    after = vanilla_gradient(model, image, model.features[2], [0, 1])
    torch.testing.assert_close(before, after)  # the hooks are gone
    assert not torch.allclose(guided, before)
    assert all(not m._backward_hooks and not m._forward_hooks for m in model.modules())
    assert [m.training for m in model.modules()] == [m is not model.features[0].bn for m in model.modules()]
    assert all(p.grad is None for p in model.parameters())


def test_guided_backprop_with_in_place_relu_restores_the_flag(image):
    plain, in_place = tiny_cnn(), tiny_cnn(inplace=True)
    in_place.load_state_dict(plain.state_dict())
    channels = top_channels(plain, image, plain.features[2], 3)
    expected = guided_backprop(plain, image, plain.features[2], channels)
    got = guided_backprop(in_place, image, in_place.features[2], channels)
    torch.testing.assert_close(got, expected)
    assert all(block.act.inplace for block in in_place.features)


def test_guided_backprop_targets_an_activation_module_and_other_activations(image):
    model = tiny_cnn(act=nn.SiLU, batch_norm=False)
    maps = guided_backprop(model, image, model.features[1].act, [0, 1], reduce="mean")
    assert maps.shape == (2, 3, 16, 16) and (maps.abs().flatten(1).sum(1) > 0).all()
    assert not torch.allclose(maps, guided_backprop(model, image, model.features[1].act, [0, 1], reduce="max"))


def test_guided_backprop_rejects_bad_arguments(image):
    model = tiny_cnn()
    with pytest.raises(ValueError, match="outside"):
        guided_backprop(model, image, model.features[0], [8])
    with pytest.raises(ValueError, match="no activation module"):
        guided_backprop(model, image, model.features[0], [0], activation_types=(nn.Tanh,))
    with pytest.raises(ValueError, match="not a submodule"):
        vanilla_gradient(model, image, nn.ReLU(), [0])
    with pytest.raises(ValueError, match="one image"):
        vanilla_gradient(model, image.repeat(2, 1, 1, 1), model.features[0], [0])
    with pytest.raises(ValueError, match="reduce"):
        vanilla_gradient(model, image, model.features[0], [0], reduce="sum")


def test_top_channels_ranks_by_the_channel_maximum(image):
    model = tiny_cnn()
    acts = layer_activations(model, image, model.features[1])
    expected = torch.argsort(acts.flatten(1).amax(1), descending=True, stable=True).tolist()
    assert top_channels(model, image, model.features[1], 3) == expected[:3]
    assert top_channels(model, image, model.features[1], 100) == expected  # capped at the channel count
    mean_order = torch.argsort(acts.flatten(1).mean(1), descending=True, stable=True).tolist()
    assert top_channels(model, image, model.features[1], 8, reduce="mean") == mean_order


def test_gradient_to_display_centres_zero_on_grey():
    assert (gradient_to_display(torch.zeros(3, 4, 4)) == 0.5).all()
    g = torch.zeros(3, 4, 4)
    g[0, 0, 0], g[1, 1, 1] = 1.0, -1.0
    shown = gradient_to_display(g)
    assert shown.shape == (4, 4, 3)
    assert shown[0, 0, 0] == 1.0 and shown[1, 1, 1] == 0.0 and shown[2, 2, 2] == 0.5


@pytest.mark.parametrize("with_image", [False, True])
def test_guided_backprop_grid_is_a_near_square_grid(tmp_path, image, with_image):
    maps = torch.randn(10, 3, 16, 16)
    channel_ids = list(range(20, 30))
    out = tmp_path / "gbp.png"
    fig = guided_backprop_grid(maps, channel_ids, out, image=image[0] if with_image else None)
    assert grid_geometry(fig) == (3, 4)  # 10 or 11 cells, 4 a row (was one column 10 or 11 tall)
    assert_png(out, fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:10 + with_image] == ["input"] * with_image + [f"channel {c}" for c in channel_ids]
    assert set(titles[10 + with_image:]) <= {""}  # the grid's spare cells stay blank
    with pytest.raises(ValueError):
        guided_backprop_grid(maps, channel_ids[:3], tmp_path / "bad.png")
