"""What the report reads: the pipeline's files, by model and by stage, as plain data.

Every path is relative to :attr:`ReportSources.root`; every model writes the layout of
:class:`~inat_cnn.core.outputs.ModelFiles`. A missing file is a :class:`UserError`
naming it and the stage that writes it, except the optional ones (a sweep, calibration).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError
from ..core.outputs import ModelFiles, details_path
from ..evaluation.compare import read_curve, read_json

# the figures of plots/<model>/ in the order the page shows them, with their captions
MODEL_FIGURES = (
    ("confusion_matrix.png", "Confusion matrix (test set)"),
    ("predictions_grid.png", "Predictions: one row per class, true label above each image, green when right"),
    ("filters.png", "First-layer filters"),
    ("feature_maps.png", "First-layer feature maps of one test image"),
    ("guided_backprop.png", "Guided back-propagation of last-block neurons"),
)
CALIBRATION_FIGURE = ("reliability.png", "Reliability diagram (test set)")
COMPARE_FIGURES = (
    ("learning_curves.png", "Validation accuracy per epoch"),
    ("per_class_accuracy.png", "Per-class test accuracy (recall)"),
)
# plots/sweep/summary.json (written by `inat-cnn sweep report`) and its figures
SWEEP_FIGURES = (
    ("metric_vs_created.png", "Validation accuracy by trial (in the order they were created)"),
    ("parallel_coordinates.png", "Parallel coordinates: each line a trial, coloured by validation accuracy"),
    ("importance.png", "Parameter importance"),
    ("trial_curves.png", "Every trial's validation accuracy per epoch (pruned trials in red)"),
)


@dataclass(frozen=True)
class ReportSources:
    """Where the pipeline's outputs are: the repository root and the models' names."""

    root: Path = Path(".")
    models: tuple[str, ...] = ("scratch", "finetune")

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def model_files(self, name: str) -> ModelFiles:
        return ModelFiles(name, self.root)


def data_counts(sources: ReportSources) -> dict[str, Any]:
    """Classes and images per class in each split: train/val from metrics/details/split.json, test from the
    first model's test metrics (each class's support), so the page reads no test image."""
    split = read_json(details_path("split", sources.root))
    test = read_json(sources.model_files(sources.models[0]).details("evaluate"))["per_class"]
    classes = list(split["classes"])
    rows = [{"class": c, "train": split["counts"][c]["train"], "val": split["counts"][c]["val"],
             "test": test.get(c, {}).get("support", 0)} for c in classes]
    totals = {k: sum(r[k] for r in rows) for k in ("train", "val", "test")}
    return {"classes": classes, "rows": rows, "totals": totals, "val_fraction": split["val_fraction"], "seed": split["seed"]}


def model_record(sources: ReportSources, name: str) -> dict[str, Any]:
    """One model's details (model, train, timing, evaluate), its test confusion pairs and its curves."""
    files = sources.model_files(name)
    record = {kind: read_json(files.details(kind)) for kind in ("model", "train", "timing", "evaluate")}
    rows = json.loads(files.test_confusion.read_text()) if files.test_confusion.is_file() else []
    record["confusion"] = Counter((r["actual"], r["predicted"]) for r in rows)
    record["curves"] = {
        (split, metric): _curve(files.curve(split, metric)) for split in ("train", "val") for metric in ("acc", "loss")
    }
    return record


def _curve(tsv: Path) -> list[float]:
    return read_curve(tsv) if tsv.is_file() else []


def sweep_summary(sources: ReportSources) -> dict[str, Any] | None:
    """plots/sweep/summary.json when `inat-cnn sweep report` has written one, else None."""
    path = sources.path("plots", "sweep", "summary.json")
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("best") else None


def lock_outputs(lock_file: Path) -> list[dict[str, str]]:
    """Each stage's outputs and their content hashes from ``lock_file`` (dvc.lock), in its order."""
    if not lock_file.is_file():
        return []
    lock = yaml.safe_load(lock_file.read_text()) or {}
    rows = []
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            rows.append({"stage": stage, "path": out["path"], "md5": out.get("md5", ""), "files": out.get("nfiles", 1)})
    return rows


def git_commit(root: Path) -> dict[str, Any]:
    """The commit the workspace is at and whether tracked files differ from it (None outside git)."""
    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "changed": []}
    changed = [line[3:] for line in (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()]
    return {"commit": commit, "changed": changed}
