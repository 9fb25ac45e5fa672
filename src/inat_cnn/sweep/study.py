"""Opening a study and checking what it is asked: its name (a DVC experiment name's prefix), its
search space, metric and goal (one study, one question), its pruner (the one that judged its
trials), and the swept keys (params of this pipeline).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .metric import parse_metric
from .pruning import DEFAULT_PRUNER, EPOCH_KEY_ATTR, PRUNER_ATTR, make_pruner
from .queue import dvc
from .spec import Sweep

_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_study_name(name: str, where: str = "--study") -> str:
    """A study name that fits in a DVC experiment name (a git ref)."""
    if not _STUDY_NAME.fullmatch(name or "") or name.endswith((".", ".lock")) or ".." in name:
        raise UserError(f"{where} = {name!r}; use letters, digits, '_', '-' and '.' (at most 64), e.g. scratch")
    return name


def _space_attr(sweep: Sweep) -> str:
    return json.dumps({k: (v if isinstance(v, list) else v.__dict__) for k, v in sweep.params.items()}, sort_keys=True, default=str)


def epoch_key(metric: str) -> str:
    """The training loop's epoch row key that goes with a ranking metric (what a trial reports)."""
    key = parse_metric(metric)[1]
    return "val_loss" if "loss" in key else "val_acc"


def open_study(sweep: Sweep, name: str, storage: Any, *, sampler: Any, pruner: str | None) -> Any:
    """Create or load study ``name`` for ``sweep``; a study created from another search space or
    goal is refused (one study, one question). ``pruner`` None: the study's own (a new study's:
    :data:`DEFAULT_PRUNER`); another pruner than the one that judged a study's trials is refused
    too, as the trials would be pruned by two rules."""
    import optuna

    direction = "maximize" if sweep.goal == "maximize" else "minimize"
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction=direction,
                                load_if_exists=True)
    attrs = study.user_attrs
    space = _space_attr(sweep)
    if "space" in attrs and (attrs["space"] != space or attrs.get("metric") != sweep.metric
                             or study.direction.name.lower() != direction):
        raise UserError(f"--study {name}: this study was created from another search space, metric or goal "
                        f"({attrs.get('sweep_file')}); give a new --study name (or the same sweep file)")
    recorded = attrs.get(PRUNER_ATTR)
    trials = len(study.get_trials(deepcopy=False))
    if recorded and pruner not in (None, recorded) and trials:
        raise UserError(f"--pruner {pruner}: study {name} was run with the {recorded} pruner, which judged its "
                        f"{trials} trial(s); resume it with --pruner {recorded} (or no --pruner), "
                        "or give a new --study name")
    pruner = pruner or recorded or DEFAULT_PRUNER
    study.pruner = make_pruner(pruner)
    for key, value in {"space": space, "metric": sweep.metric, "targets": list(sweep.targets),
                       "sweep_file": str(sweep.path or ""), PRUNER_ATTR: pruner,
                       EPOCH_KEY_ATTR: epoch_key(sweep.metric)}.items():
        if attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def check_params_known(sweep: Sweep, repo: Path) -> None:
    """Every swept key is a param of the pipeline (as DVC reads them: ``dvc params diff --all``)."""
    known: set[str] = set()
    for file, params in json.loads(dvc(["params", "diff", "--all", "--json"], repo, "reading the pipeline's params") or "{}").items():
        known.update(params if file == "params.yaml" else (f"{file}:{k}" for k in params))
    for key in sweep.params:
        if known and key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            raise UserError(f"{sweep.path}: params key {key!r} is not a param of this pipeline (dvc.yaml / params.yaml)"
                            + (f"; did you mean {close[0]}?" if close else ""))
