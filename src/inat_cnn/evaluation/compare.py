"""The comparison of any number of models: one summary row each from the stages' metrics and curves.

Every model writes the same files (:class:`~inat_cnn.core.outputs.ModelFiles`): its details
``metrics/details/{model,train,timing,evaluate}_<name>.json`` and its validation curve in
``dvclive/train_<name>/``. The compare stage reads only those and writes the side-by-side table
(metrics/details/compare.json, reports/compare.md) and two figures.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.outputs import COMPARE_MD, COMPARE_PLOTS, LEARNING_CURVES_PNG, PER_CLASS_PNG, ModelFiles

COLUMNS = (
    ("test_accuracy", "test accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("params", "params", "{:,}"),
    ("trainable_params", "trainable params", "{:,}"),
    ("flops_per_image", "GFLOPs / image", None),
    ("train_seconds", "training wall time (s)", "{:.1f}"),
    ("best_epoch", "epochs to best val acc", "{}"),
    ("best_val_acc", "best val accuracy", "{:.3f}"),
    ("images_per_s", "training images/s", "{:.1f}"),
)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    test_accuracy: float
    macro_f1: float
    params: int
    trainable_params: int
    flops_per_image: int
    train_seconds: float
    best_epoch: int
    best_val_acc: float
    images_per_s: float
    val_acc_curve: list[float]
    per_class_accuracy: dict[str, float]  # recall of each class on the test set


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: not found; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def read_curve(tsv: Path) -> list[float]:
    """A dvclive metric curve (columns timestamp, step, <name>) as values per step."""
    if not tsv.is_file():
        raise UserError(f"{tsv}: learning curve not found; run the training stage first (dvc repro)")
    with tsv.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    name = tsv.stem
    return [float(row[name]) for row in sorted(rows, key=lambda r: int(r["step"]))]


def _per_class(test: dict[str, Any]) -> dict[str, float]:
    return {name: row["recall"] for name, row in test["per_class"].items()}


def model_summary(files: ModelFiles) -> ModelSummary:
    """One row of the comparison from the files of model ``files.name`` (see :class:`ModelFiles`)."""
    model, fit, timing, test = (read_json(files.details(k)) for k in ("model", "train", "timing", "evaluate"))
    return ModelSummary(
        name=model["label"], test_accuracy=test["accuracy"], macro_f1=test["macro_f1"],
        params=model["params"], trainable_params=model["trainable_params"], flops_per_image=model["flops_per_image"],
        train_seconds=timing["train_seconds"], best_epoch=fit["best_epoch"], best_val_acc=fit["best_val_acc"],
        images_per_s=timing["images_per_s"], val_acc_curve=read_curve(files.curve("val", "acc")), per_class_accuracy=_per_class(test),
    )


def comparison(models: list[ModelSummary]) -> dict[str, Any]:
    """metrics/details/compare.json: one entry per model (no curves), and the one chosen on validation accuracy.

    The test accuracy is reported beside it, never used to choose."""
    rows = {m.name: {k: v for k, v in asdict(m).items() if k not in ("name", "val_acc_curve")} for m in models}
    best = max(models, key=lambda m: m.best_val_acc)
    return {"models": rows, "best_by_val_accuracy": best.name}


def table_rows(models: list[ModelSummary]) -> list[tuple[str, list[str]]]:
    """The comparison table as (row label, one formatted cell per model) in :data:`COLUMNS` order."""
    def cell(key: str, fmt: str | None, value: Any) -> str:
        return f"{value / 1e9:.3f}" if key == "flops_per_image" else fmt.format(value)

    return [(label, [cell(key, fmt, getattr(m, key)) for m in models]) for key, label, fmt in COLUMNS]


def markdown_table(models: list[ModelSummary]) -> str:
    lines = ["| | " + " | ".join(m.name for m in models) + " |", "|---|" + "---|" * len(models)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_rows(models)]
    return "\n".join(lines)


def _from_report(figure: str) -> str:
    """``figure`` of plots/compare/ as reports/compare.md links it (relative, so it renders where the repo is)."""
    return Path(os.path.relpath(COMPARE_PLOTS / figure, COMPARE_MD.parent)).as_posix()


def markdown_report(models: list[ModelSummary]) -> str:
    classes = list(models[0].per_class_accuracy)
    per_class = ["| class | " + " | ".join(m.name for m in models) + " |", "|---|" + "---|" * len(models)]
    per_class += [
        f"| {c} | " + " | ".join(f"{m.per_class_accuracy.get(c, float('nan')):.3f}" for m in models) + " |"
        for c in classes
    ]
    return (
        "# Model comparison\n\n"
        "Test set = the dataset's own `val/` folder (never used for tuning or choosing: the best model is the one "
        "with the best validation accuracy). FLOPs: 1 multiply-add = 2 FLOPs, "
        "conv and linear layers (FlopCounterMode). Training wall time includes validation.\n\n"
        + markdown_table(models)
        + "\n\n## Per-class test accuracy (recall)\n\n"
        + "\n".join(per_class)
        + f"\n\n![learning curves]({_from_report(LEARNING_CURVES_PNG)})\n"
        f"![per-class accuracy]({_from_report(PER_CLASS_PNG)})\n"
    )
