"""What the report reads: the pipeline's files, by model and by stage, as plain data.

Every path is relative to :attr:`ReportSources.root`; every model writes the layout of
:class:`~inat_cnn.core.outputs.ModelFiles`. A missing file is a :class:`~inat_cnn.core.errors.UserError`
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

from ..core.outputs import (
    CONFUSION_PNG, FEATURE_MAPS_PNG, FILTERS_PNG, GUIDED_BACKPROP_PNG, IMPORTANCE_PNG, LEARNING_CURVES_PNG,
    METRIC_VS_CREATED_PNG, PARALLEL_COORDINATES_PNG, PER_CLASS_PNG, PREDICTIONS_PNG, RELIABILITY_PNG, SWEEP_SUMMARY,
    TRIAL_CURVES_PNG, ModelFiles, details_path,
)
from ..evaluation.compare import read_curve, read_json

# the figures of plots/<model>/ in the order the page shows them, with their captions
MODEL_FIGURES = (
    (CONFUSION_PNG, "Confusion matrix (test set)"),
    (PREDICTIONS_PNG, "Predictions: one row per class, true label above each image, green when right"),
    (FILTERS_PNG, "First-layer filters"),
    (FEATURE_MAPS_PNG, "First-layer feature maps of one test image"),
    (GUIDED_BACKPROP_PNG, "Guided back-propagation of last-block neurons"),
)
CALIBRATION_FIGURE = (RELIABILITY_PNG, "Reliability diagram (test set)")
COMPARE_FIGURES = (
    (LEARNING_CURVES_PNG, "Validation accuracy per epoch"),
    (PER_CLASS_PNG, "Per-class test accuracy (recall)"),
)
# plots/sweep/summary.json (written by `inat-cnn sweep report`) and its figures
SWEEP_FIGURES = (
    (METRIC_VS_CREATED_PNG, "Validation accuracy by trial (in the order they were created)"),
    (PARALLEL_COORDINATES_PNG, "Parallel coordinates: each line a trial, coloured by validation accuracy"),
    (IMPORTANCE_PNG, "Parameter importance"),
    (TRIAL_CURVES_PNG, "Every trial's validation accuracy per epoch (pruned trials in red)"),
)


@dataclass(frozen=True)
class ReportSources:
    """Where the pipeline's outputs are: the repository root and the models' names."""

    root: Path = Path(".")
    models: tuple[str, ...] = ("scratch", "finetune")

    def path(self, relative: Path) -> Path:
        """``relative`` (a path of core.outputs) in this repository."""
        return self.root / relative

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


def compare_choice(sources: ReportSources) -> str:
    """The label of the model the compare stage chose by validation accuracy (metrics/details/compare.json)."""
    return read_json(details_path("compare", sources.root))["best_by_val_accuracy"]


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
    path = sources.path(SWEEP_SUMMARY)
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
