"""Where the stages write: the one place the code spells the pipeline's paths (dvc.yaml declares the same ones).

DVC metrics are a leaderboard, so that ``dvc exp show`` answers "which run is best" at a glance: per
model, ``metrics/train_<name>.json`` (:func:`train_headline`: validation accuracy, the ranking figure;
epochs run; training seconds; parameters) and ``metrics/evaluate_<name>.json`` (:func:`test_headline`:
test accuracy, macro-F1 and ECE after the temperature, reported, never ranked by), seven numbers. Everything else a
stage reports (per-class tables, counts per split, bad files, layer tables, calibration internals,
timings) is a plain, DVC-cached output in ``metrics/details/`` (cached, not ``cache: false``: DVC keeps
a stage with an uncached out that is not a metric out of its run cache); compare and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import write_json

METRICS = Path("metrics")
DETAILS = METRICS / "details"

# The data stages' folders: download -> RAW (its archive kept in DOWNLOADS), stratified_split -> SPLIT,
# prepare -> PREPARED (a folder per split: train, val, test).
RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")
SPLIT = Path("data/split")
PREPARED = Path("data/prepared")

# Figures, by file name. Each model's evaluate stage draws these in ModelFiles.figures:
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_PNG = "predictions_grid.png"
RELIABILITY_PNG = "reliability.png"
FILTERS_PNG = "filters.png"
FEATURE_MAPS_PNG = "feature_maps.png"
GUIDED_BACKPROP_PNG = "guided_backprop.png"

# The compare stage's outputs (and its details_path("compare")), the report stage's page:
COMPARE_MD = Path("reports/compare.md")
COMPARE_PLOTS = Path("plots/compare")
LEARNING_CURVES_PNG = "learning_curves.png"
PER_CLASS_PNG = "per_class_accuracy.png"
REPORT_HTML = Path("reports/index.html")

# What `inat-cnn sweep report` writes (not a stage: the report stage shows it when it is there), and lr-find's figures:
SWEEP_PLOTS = Path("plots/sweep")
SWEEP_MD = Path("reports/sweep.md")
SWEEP_SUMMARY = SWEEP_PLOTS / "summary.json"
METRIC_VS_CREATED_PNG = "metric_vs_created.png"
PARALLEL_COORDINATES_PNG = "parallel_coordinates.png"
IMPORTANCE_PNG = "importance.png"
IMPORTANCE_CSV = "importance.csv"
TRIAL_CURVES_PNG = "trial_curves.png"
LR_FIND_PLOTS = Path("plots/lr_find")


def details_path(stem: str, root: Path = Path(".")) -> Path:
    """``metrics/details/<stem>.json``: a stage's full report (download, split, prepare, compare, ...)."""
    return root / DETAILS / f"{stem}.json"


@dataclass(frozen=True)
class ModelFiles:
    """Every path one model's stages write (``train_<name>`` or ``finetune``, then ``evaluate_<name>``):
    every model has the same layout, so compare and the report take a list of names."""

    name: str  # scratch, finetune, ...: the suffix of its files
    root: Path = Path(".")  # the repository

    @property
    def train_metrics(self) -> Path:
        return self.root / METRICS / f"train_{self.name}.json"

    @property
    def ranking_metric(self) -> str:
        """``metrics/train_<name>.json:<name>_val_acc`` (FILE:KEY): what sweeps rank this model's runs by."""
        return f"{self.train_metrics.as_posix()}:{val_acc_key(self.name)}"

    @property
    def test_metrics(self) -> Path:
        return self.root / METRICS / f"evaluate_{self.name}.json"

    def details(self, kind: str) -> Path:
        """``kind``: model (size, layers), train (fit + val calibration), timing, evaluate (test details)."""
        return details_path(f"{kind}_{self.name}", self.root)

    @property
    def checkpoint(self) -> Path:
        return self.root / "models" / f"{self.name}.pt"

    @property
    def train_live(self) -> Path:
        return self.root / "dvclive" / f"train_{self.name}"

    @property
    def test_live(self) -> Path:
        return self.root / "dvclive" / f"evaluate_{self.name}"

    @property
    def figures(self) -> Path:
        return self.root / "plots" / self.name

    @property
    def resume(self) -> Path:
        return self.root / ".resume" / f"train_{self.name}.pt"

    def curve(self, split: str, metric: str) -> Path:
        """dvclive's per-epoch ``metric`` (acc, loss) on ``split`` (train, val)."""
        return self.train_live / "plots" / "metrics" / split / f"{metric}.tsv"

    @property
    def test_confusion(self) -> Path:
        return self.test_live / "plots" / "sklearn" / "confusion_matrix.json"

    def train_outs(self) -> list[Path]:
        """What its training stage declares in dvc.yaml: outs, then the leaderboard metric (a test checks)."""
        return [self.checkpoint, self.train_live, *(self.details(k) for k in ("model", "train", "timing")), self.train_metrics]

    def evaluate_outs(self) -> list[Path]:
        """What its evaluate stage declares in dvc.yaml: outs, then the leaderboard metric."""
        return [self.figures, self.test_live, self.details("evaluate"), self.test_metrics]


def val_acc_key(name: str) -> str:
    """``<name>_val_acc``: model ``name``'s leaderboard key for the best epoch's validation accuracy."""
    return f"{name}_val_acc"


def train_headline(name: str, fit: dict[str, Any], timing: dict[str, Any], params: int) -> dict[str, Any]:
    """``metrics/train_<name>.json``. Keys carry the model's name: ``dvc exp show`` heads a column with
    the bare key only where no other metrics file has it, so ``scratch_val_acc``, not
    ``metrics/train_scratch.json:best_val_acc``. ``<name>_val_acc`` is the best epoch's (the
    checkpoint's) validation accuracy, what sweeps rank by, kept exact."""
    row = {val_acc_key(name): fit["best_val_acc"], f"{name}_epochs": fit["epochs_run"],
           f"{name}_secs": round(timing["train_seconds"], 1), f"{name}_params": params}
    if fit.get("pruned_after_epoch") is not None:  # only a sweep's pruned trial has this column
        row[f"{name}_pruned_at"] = fit["pruned_after_epoch"]
    return row


def test_headline(name: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """``metrics/evaluate_<name>.json`` from the evaluate stage's details (4 decimals: a leaderboard cell);
    ``<name>_ece``: the expected calibration error on the test set at the temperature fitted on val."""
    return {f"{name}_test_acc": round(evaluation["accuracy"], 4), f"{name}_test_f1": round(evaluation["macro_f1"], 4),
            f"{name}_ece": round(evaluation["calibration"]["ece_after"], 4)}


def write_training_results(files: ModelFiles, fit: dict[str, Any], timing: dict[str, Any],
                           calibration: dict[str, Any], params: int) -> None:
    """What a training stage writes once the model is trained and its temperature fitted on val:
    the details (``fit`` + ``calibration``, ``timing``), then its leaderboard row."""
    write_json(files.details("train"), {**fit, "calibration": calibration})
    write_json(files.details("timing"), timing)
    write_json(files.train_metrics, train_headline(files.name, fit, timing, params))


def write_test_results(files: ModelFiles, evaluation: dict[str, Any]) -> None:
    """What an evaluate stage writes: the test details, then the model's test leaderboard row."""
    write_json(files.details("evaluate"), evaluation)
    write_json(files.test_metrics, test_headline(files.name, evaluation))
