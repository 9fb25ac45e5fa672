"""Classification metrics (scikit-learn) of predicted labels: accuracy, macro-F1, per-class scores and
the confusion matrix. A module apart from :mod:`.predictions` so that training, which predicts but
never scores, does not import scikit-learn."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support, keyed by class name."""
    idx = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=idx, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=idx, average="macro", zero_division=0)),
        "num_images": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
    }


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(labels, preds, labels=list(range(num_classes)))
