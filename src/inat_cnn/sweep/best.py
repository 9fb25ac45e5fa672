"""The best trial measured once on the test set (:func:`evaluate_best`): ``dvc exp apply`` it,
``dvc repro`` its evaluate stage, and record the result in the study, which refuses a second time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .metric import lookup, parse_metric, reported_test_metric
from .pruning import trial_name
from .queue import dvc
from .results import number


def evaluate_best(study: Any, repo: Path) -> dict[str, Any]:
    """Apply the study's best trial (``dvc exp apply``) and run its evaluate stage (``dvc repro``):
    the test set, once per study; the result is recorded in the study."""
    done = study.user_attrs.get("test_evaluation")
    if done:
        accuracy = "unreadable" if done["test_accuracy"] is None else f"{done['test_accuracy']:.4g}"
        raise UserError(f"study {study.study_name}: trial {done['trial']} ({done['exp']}) was already evaluated on the "
                        f"test set (accuracy {accuracy}); the test set is measured once per study")
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {study.study_name}: no completed trial yet; run `inat-cnn sweep run` first") from None
    name = best.user_attrs.get("dvc_exp") or trial_name(study.study_name, best.number)
    test_metric = reported_test_metric(study.user_attrs.get("metric", ""))
    if test_metric is None:
        raise UserError(f"study {study.study_name}: its metric {study.user_attrs.get('metric')!r} names no training stage")
    file, key = parse_metric(test_metric)
    stage = Path(file).stem
    try:
        dvc(["exp", "apply", name], repo, f"applying {name} (run `dvc exp pull origin` first if it ran elsewhere)")
    except UserError as exc:
        if "Checkout failed" not in str(exc):
            raise
        # outputs of stages that never ran here (a sweep of train_scratch alone): `dvc repro` below
        # restores or re-runs whatever the evaluate stage needs
        print(f"note: `dvc exp apply {name}` could not check out the outputs of stages that never ran here", flush=True)
    dvc(["repro", stage], repo, f"evaluating {name} on the test set")
    # the test set has been measured: recorded whatever the file holds, so that nothing measures it again
    try:
        accuracy = number(lookup(json.loads((Path(repo) / file).read_text()), key))
    except (OSError, ValueError):
        accuracy = None
    result = {"trial": best.number, "exp": name, "val": best.value, "test_accuracy": accuracy, "stage": stage}
    study.set_user_attr("test_evaluation", result)
    if accuracy is None:
        raise UserError(f"{file}: no number at {key} after `dvc repro {stage}`; recorded as measured all the same")
    return result
