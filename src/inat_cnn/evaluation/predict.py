"""Top-k class predictions of any checkpoint for image files and folders (`inat-cnn predict`).

The checkpoint is loaded once with :func:`~inat_cnn.checkpoint.load_model`; every image goes
through the checkpoint's own deterministic preprocessing: the square the ``prepare`` stage
caches (``square_image``), then the evaluation ``BatchTransform`` val and test use, in batches. A folder stands for every JPEG/PNG file inside it,
recursively, in sorted order (hidden files and OS metadata left out). A missing or unreadable
file, an empty folder or a ``top_k`` below 1 is a :class:`~inat_cnn.errors.UserError` naming it, and
so is an image whose header claims more than ``limits`` allow (the pipeline's default
``data.max_image_pixels`` and ``data.max_aspect_ratio``): it is refused before it is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..data.images import DEFAULT_LIMITS, IGNORED_NAMES, IMAGE_SUFFIXES, ImageLimits, check_image, decode_rgb, file_problem
from ..data.preprocessing import BatchTransform, square_image
from ..core.errors import FieldError, UserError

BATCH_SIZE = 32


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") or part in IGNORED_NAMES for part in path.relative_to(root).parts)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: a file as given; a folder as every JPEG/PNG file inside
    it, recursively, sorted. UserError for a path that does not exist or a folder without images."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                p for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p, item)
            )  # fmt: skip
            if not files:
                raise UserError(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder or below it")
            found.extend(files)
        elif item.is_file():
            found.append(item)
        else:  # a FIFO would block the read forever; a broken link has nothing to read: say which it is
            what = file_problem(item) if os.path.lexists(item) else None
            raise UserError(f"{item}: {what or 'no such file or folder'}; give image files or folders of images")
    if not found:
        raise UserError("no images given; give image files or folders of images")
    return found


def load_square(path: Path, size: int, limits: ImageLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """uint8 (3, size, size): the image file's centre square resized to ``size``, as the ``prepare`` stage caches it."""
    try:
        image = decode_rgb(path, limits)
    except UserError as exc:
        reason = check_image(path, limits) or str(exc.__cause__ or exc)  # the sharper reason: "not an image", "truncated JPEG" ...
        raise UserError(f"{path}: cannot be read as an image: {reason}; give intact JPEG or PNG files") from exc
    return square_image(image, size)


@torch.no_grad()
def predict_images(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    top_k: int = 3,
    *,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    limits: ImageLimits = DEFAULT_LIMITS,
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Per image, in input order: ``{"path": str, "top": [{"class": name, "probability": p}, ...]}``,
    the ``top_k`` most probable classes (at most the checkpoint's class count), most probable first.
    Probabilities are calibrated: the logits are divided by the checkpoint's temperature (fitted on the
    validation split by the training stages; 1 for a checkpoint without one).
    ``tta``: average with the mirror image's probabilities (as the evaluate stages do with ``evaluate.tta``)."""
    from ..models.build import load_model
    from ..models.checkpoint import temperature_of
    from ..core.device import select_device
    from .predictions import class_probs

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise FieldError("top_k", top_k, "is not allowed; expected an integer >= 1")
    paths = collect_images(inputs)
    model, spec, ckpt = load_model(checkpoint)
    temperature = temperature_of(ckpt)
    dev = select_device(device)
    model.to(dev)
    transform = BatchTransform(spec.preprocessing, augment=False)
    size = spec.preprocessing.source_size
    k = min(top_k, len(spec.class_names))
    results: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        x = transform(torch.stack([load_square(p, size, limits) for p in chunk]).to(dev))
        probs = class_probs(model, x, tta=tta, temperature=temperature)
        values, indices = probs.topk(k, dim=1)
        for path, vals, idxs in zip(chunk, values.cpu().tolist(), indices.cpu().tolist()):
            top = [{"class": spec.class_names[i], "probability": v} for v, i in zip(vals, idxs)]
            results.append({"path": str(path), "top": top})
    return results


def format_predictions(results: Sequence[dict[str, Any]]) -> str:
    """Human-readable: per image its path, then one ``class  probability%`` line per class."""
    width = max((len(t["class"]) for r in results for t in r["top"]), default=0)
    lines: list[str] = []
    for r in results:
        lines.append(r["path"])
        lines.extend(f"  {t['class']:<{width}}  {100 * t['probability']:6.2f}%" for t in r["top"])
    return "\n".join(lines)
