"""Sentences computed from the numbers, each shown beside the figure or table it rests on.

Every function takes plain data (see :mod:`.sources`) and returns a list of sentences; none
chooses anything: the test figures are described, never used to pick.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..core.errors import UserError
from ..core.outputs import details_path


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def data_observations(counts: dict[str, Any]) -> list[str]:
    rows, totals = counts["rows"], counts["totals"]
    smallest = min(rows, key=lambda r: r["train"])
    largest = max(rows, key=lambda r: r["train"])
    facts = [
        f"{len(rows)} classes; {totals['train']} training, {totals['val']} validation (a stratified "
        f"{_pct(counts['val_fraction'])} of the dataset's train/ folder, seed {counts['seed']}) and "
        f"{totals['test']} test images (the dataset's own val/ folder)."
    ]
    if smallest["train"] != largest["train"]:
        facts.append(f"The classes are not balanced: {smallest['class']} has {smallest['train']} training images, "
                     f"{largest['class']} {largest['train']}.")
    return facts


def confused_pairs(confusion: Counter, top: int = 3) -> list[tuple[str, str, int]]:
    """The class pairs most often mistaken for each other, both directions added, most first."""
    pairs: Counter = Counter()
    for (actual, predicted), n in confusion.items():
        if actual != predicted:
            pairs[tuple(sorted((actual, predicted)))] += n
    return [(a, b, n) for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def model_observations(record: dict[str, Any]) -> list[str]:
    fit, test = record["train"], record["evaluate"]
    facts = [
        f"Best validation accuracy {_pct(fit['best_val_acc'])} at epoch {fit['best_epoch']} of {fit['epochs_run']}"
        + (" (stopped early)" if fit.get("stopped_early") else "")
        + f"; that checkpoint scores {_pct(test['accuracy'])} on the test set "
        f"({100 * (test['accuracy'] - fit['best_val_acc']):+.1f} points)."
    ]
    per_class = test["per_class"]
    f1 = {c: row["f1"] for c, row in per_class.items()}
    high, low = max(f1.values()), min(f1.values())
    if high != low:
        easiest = ", ".join(c for c in f1 if f1[c] == high)
        hardest = ", ".join(c for c in f1 if f1[c] == low)
        facts.append(f"Easiest: {easiest} (F1 {high:.2f}); hardest: {hardest} (F1 {low:.2f}).")
    pairs = confused_pairs(record["confusion"])
    if pairs:
        facts.append("Most confused: " + "; ".join(f"{a} ↔ {b} ({n} test images)" for a, b, n in pairs) + ".")
    timing = record.get("timing") or {}
    if timing.get("precision"):  # recorded since amp: auto
        facts.append(f"Trained in {timing['precision']}: {timing.get('precision_reason', '')}.")
    return facts


def calibration_observations(test: dict[str, Any]) -> list[str]:
    """ECE before and after temperature scaling (present once the evaluate stage records them)."""
    cal = test.get("calibration")
    if not cal:
        return []
    before, after, t = cal["ece_before"], cal["ece_after"], cal["temperature"]
    if not cal.get("fitted", True):
        return [f"Temperature not fitted (validation split too small / saturated): the confidences are the raw "
                f"softmax; expected calibration error on the test set {_pct(before)}."]
    direction = "over" if t > 1 else "under"
    return [f"Temperature {t:.3g} (fitted on the validation split): the raw model was {direction}-confident; "
            f"expected calibration error on the test set {_pct(before)} → {_pct(after)}."]


def sweep_observations(summary: dict[str, Any]) -> list[str]:
    best = summary["best"]
    facts = [f"Best trial {best['name']}: {summary.get('label', 'validation accuracy')} {best['value']:.3f}."]
    rows = [r for r in summary.get("importance") or [] if r.get("importance") is not None]
    if rows:
        top = max(rows, key=lambda r: r["importance"])
        value = best["params"].get(top["param"])
        facts.append(f"The most important parameter is {top['param']} ({_pct(top['importance'])} of the variance "
                     f"explained); the best trial used {top['param']} = {value}.")
    if summary.get("trials") is not None:
        pruned = (summary.get("states") or {}).get("pruned", 0)
        facts.append(f"{summary['trials']} trials, {pruned} pruned early, {summary.get('epochs', '?')} epochs spent in all.")
    return facts


def comparison_observations(records: dict[str, dict[str, Any]], chosen_label: str) -> list[str]:
    """Which model validation chose (the compare stage's choice, by its label), and what it costs against the others."""
    chosen = next((n for n, r in records.items() if r["model"]["label"] == chosen_label), None)
    if chosen is None:  # compare ran on other models than the report's: its files are stale
        labels = ", ".join(repr(r["model"]["label"]) for r in records.values())
        raise UserError(f"{details_path('compare')} chose {chosen_label!r}, none of the report's models ({labels}); "
                        "run the compare stage on the same models (dvc repro compare)")
    c = records[chosen]
    facts = [f"Chosen by validation accuracy: {c['model']['label']} ({_pct(c['train']['best_val_acc'])} validation, "
             f"{_pct(c['evaluate']['accuracy'])} test)."]
    for name, r in records.items():
        if name == chosen:
            continue
        gain = c["evaluate"]["accuracy"] - r["evaluate"]["accuracy"]
        facts.append(
            f"Against {r['model']['label']}: {100 * gain:+.1f} test points with "
            f"{c['model']['trainable_params'] / max(r['model']['trainable_params'], 1):.1f}× the trainable parameters, "
            f"{c['model']['flops_per_image'] / max(r['model']['flops_per_image'], 1):.1f}× the FLOPs per image and "
            f"{c['timing']['train_seconds'] / max(r['timing']['train_seconds'], 1e-9):.1f}× the training time."
        )
    return facts
