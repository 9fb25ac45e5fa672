"""The offline default dataset: seeded, real JPEG files whose classes differ visibly.

Each class is a family: a dominant shape x a colour family x a fill texture. Every image draws that
shape at a random position, scale, stretch and rotation over a noisy, randomly tinted background
with smaller distractor shapes of any family, then adds pixel noise and is saved as a JPEG. Shape
is the strongest cue, colour a partial one (it is sometimes random), so a small CNN needs a few
epochs but ends well above chance. Any number of classes works: shape, texture and colour are
combined in turn, so the first ``len(SHAPES) * len(TEXTURES) * len(COLOUR_FAMILIES)`` classes
are all different families.
"""

from __future__ import annotations

import colorsys
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..core.config import SyntheticConfig
from ..core.errors import UserError
from .images import IGNORED_NAMES

Polygon = list[tuple[float, float]]
JPEG_QUALITY = 90
COLOUR_FAMILIES = 12  # hue centres, spread by the golden ratio
TEXTURES = ("solid", "outline", "nested")
THREADS = 2


def _circle(n: int = 40, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> Polygon:
    return [(cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _ring(r_in: float, r_out: float, n: int = 24) -> list[Polygon]:
    outer, inner = _circle(n, r_out), _circle(n, r_in)
    return [[outer[i], outer[(i + 1) % n], inner[(i + 1) % n], inner[i]] for i in range(n)]


def _star(points: int = 5, inner: float = 0.42) -> Polygon:
    return [
        ((1.0 if i % 2 == 0 else inner) * math.cos(math.pi * i / points - math.pi / 2),
         (1.0 if i % 2 == 0 else inner) * math.sin(math.pi * i / points - math.pi / 2))
        for i in range(2 * points)
    ]  # fmt: skip


def _blobs(rng: np.random.Generator) -> list[Polygon]:
    return [
        _circle(24, float(rng.uniform(0.3, 0.55)), *map(float, rng.uniform(-0.45, 0.45, size=2)))
        for _ in range(int(rng.integers(3, 6)))
    ]


def _crescent() -> Polygon:
    outer = [(math.cos(t), math.sin(t)) for t in np.linspace(-2.2, 2.2, 30)]
    inner = [(0.45 + 0.75 * math.cos(t), 0.8 * math.sin(t)) for t in np.linspace(1.9, -1.9, 30)]
    return outer + inner


# Every shape is a list of polygons in unit coordinates (centre 0, radius about 1).
SHAPES: dict[str, Callable[[np.random.Generator], list[Polygon]]] = {
    "circle": lambda rng: [_circle()],
    "square": lambda rng: [_rect(-0.8, -0.8, 0.8, 0.8)],
    "triangle": lambda rng: [[(0.0, -1.0), (0.9, 0.65), (-0.9, 0.65)]],
    "stripes": lambda rng: [_rect(-1.0, -1.0 + 0.5 * k, 1.0, -0.75 + 0.5 * k) for k in range(4)],
    "rings": lambda rng: _ring(0.75, 1.0) + _ring(0.3, 0.5),
    "checker": lambda rng: [
        _rect(-1 + 0.5 * i, -1 + 0.5 * j, -0.5 + 0.5 * i, -0.5 + 0.5 * j)
        for i in range(4) for j in range(4) if (i + j) % 2 == 0
    ],  # fmt: skip
    "blobs": _blobs,
    "cross": lambda rng: [[(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
                           (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]],  # fmt: skip
    "star": lambda rng: [_star()],
    "dots": lambda rng: [_circle(16, 0.2, 0.65 * i, 0.65 * j) for i in (-1, 0, 1) for j in (-1, 0, 1)],
    "hexagon": lambda rng: [_circle(6)],
    "crescent": lambda rng: [_crescent()],
    "arrow": lambda rng: [[(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)]],
}
SHAPE_NAMES = tuple(SHAPES)


def class_family(index: int) -> tuple[str, str, int]:
    """(shape, texture, colour family) of class number ``index``; distinct for the first 468 classes."""
    n_shapes, n_textures = len(SHAPE_NAMES), len(TEXTURES)
    shape = SHAPE_NAMES[index % n_shapes]
    texture = TEXTURES[(index + index // n_shapes) % n_textures]
    colour = (index + index // (n_shapes * n_textures)) % COLOUR_FAMILIES
    return shape, texture, colour


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _family_colour(rng: np.random.Generator, family: int) -> tuple[int, int, int]:
    """A colour near the family's hue, but a random one 15% of the time."""
    hue = (family * 0.618034 + 0.05) % 1.0 + rng.uniform(-0.06, 0.06)
    if rng.random() < 0.15:
        hue = rng.random()
    return _rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return _rgb(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.3, 1.0))


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    shape: str,
    texture: str,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]],
    centre: tuple[float, float],
    radius: float,
) -> None:
    """Draw ``shape`` rotated, stretched and scaled to ``radius`` around ``centre``."""
    angle = rng.uniform(0.0, 2 * math.pi)
    sx, sy = rng.uniform(0.75, 1.25, size=2)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(poly: Polygon, scale: float = 1.0) -> list[tuple[float, float]]:
        return [
            (centre[0] + radius * scale * (x * sx * cos - y * sy * sin),
             centre[1] + radius * scale * (x * sx * sin + y * sy * cos))
            for x, y in poly
        ]  # fmt: skip

    polygons = SHAPES[shape](rng)
    width = max(2, int(radius * 0.14))
    for poly in polygons:
        if texture == "outline":
            draw.line(place(poly) + place(poly[:1]), fill=colours[0], width=width, joint="curve")
        else:
            draw.polygon(place(poly), fill=colours[0])
    if texture == "nested":
        for poly in polygons:
            draw.polygon(place(poly, 0.5), fill=colours[1])


def _image_size(rng: np.random.Generator, min_side: int, max_side: int) -> tuple[int, int]:
    """(width, height) in [min_side, max_side], aspect ratios from about 3:5 to 5:3."""
    width = int(rng.integers(min_side, max_side + 1))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.67)))
    return width, int(min(max(round(width / aspect), min_side), max_side))


def render_image(rng: np.random.Generator, class_index: int, min_side: int, max_side: int) -> Image.Image:
    """One synthetic RGB image of class number ``class_index``."""
    shape, texture, family = class_family(class_index)
    width, height = _image_size(rng, min_side, max_side)
    side = min(width, height)
    # background: a random low-saturation tint with low-frequency blotches
    tint = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.9)), dtype=np.float32)
    blotches = rng.uniform(-45, 45, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3))
    coarse = Image.fromarray(np.clip(tint + blotches, 0, 255).astype(np.uint8))
    image = coarse.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):  # distractors of any family
        r = side * rng.uniform(0.05, 0.13)
        centre = (rng.uniform(0, width), rng.uniform(0, height))
        colours = (_random_colour(rng), _random_colour(rng))
        _draw_shape(draw, rng, SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))], TEXTURES[rng.integers(3)], colours, centre, r)
    r = side * rng.uniform(0.2, 0.4)
    centre = (rng.uniform(0.6 * r, width - 0.6 * r), rng.uniform(0.6 * r, height - 0.6 * r))
    colours = (_family_colour(rng, family), _family_colour(rng, family + COLOUR_FAMILIES // 2))
    _draw_shape(draw, rng, shape, texture, colours, centre, r)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(6.0, 22.0)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _check_class_names(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        if name.startswith(".") or "/" in name or "\\" in name or name in IGNORED_NAMES:
            raise UserError(
                f"data.synthetic.classes: {name!r} cannot be a class folder name "
                "(no slashes, no leading dot, no OS metadata names); rename it"
            )


def _write_image(class_dir: Path, seed: int, split_index: int, class_index: int, i: int, cfg: SyntheticConfig) -> None:
    rng = np.random.default_rng([seed, split_index, class_index, i])
    image = render_image(rng, class_index, cfg.min_side, cfg.max_side)
    image.save(class_dir / f"{i:04d}.jpg", "JPEG", quality=JPEG_QUALITY)


def generate_synthetic(cfg: SyntheticConfig, seed: int, out_dir: str | Path) -> None:
    """Write ``out_dir/{train,test}/<class>/NNNN.jpg``; the same seed gives byte-identical files.

    Image ``i`` of a class depends only on (seed, split, class index, i), so the work is shared
    by a few threads (drawing, noise and JPEG encoding release the GIL in part).
    """
    _check_class_names(cfg.classes)
    out_dir = Path(out_dir)
    with ThreadPoolExecutor(THREADS) as pool:
        jobs = []
        for split_index, (split, per_class) in enumerate((("train", cfg.train_per_class), ("test", cfg.test_per_class))):
            for class_index, name in enumerate(cfg.classes):
                class_dir = out_dir / split / name
                class_dir.mkdir(parents=True, exist_ok=True)
                jobs += [pool.submit(_write_image, class_dir, seed, split_index, class_index, i, cfg) for i in range(per_class)]
        for job in jobs:
            job.result()
