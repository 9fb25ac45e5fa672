"""What every stage script shares: read params.yaml, run, turn bad input into one clear line.

A stage script is ``run_stage(main)`` where ``main(params: dict) -> None`` builds its typed
config from its own params section, calls the library and writes its declared outputs. Before it
runs, the temps that killed stages left under the output folders are removed (any stage's, so a
leftover goes even when its own stage is up to date and never runs again).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError, UserError
from .files import remove_stale_temps_under

# params.yaml's top level: the seed and one section per config (core/config.py). Anything else is a
# misspelling (`trian:`) that would otherwise be ignored while its section silently took defaults.
PARAMS_KEYS = ("seed", "data", "prepare", "model", "train", "finetune", "evaluate", "report", "logging")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no params file here; run the stage from the repository root")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    unknown = sorted(set(params) - set(PARAMS_KEYS), key=str)
    if unknown:
        raise ConfigError(f"params: unknown top-level key {unknown[0]!r} in {path}; the keys are: {', '.join(PARAMS_KEYS)}")
    return params


def seed_param(params: dict[str, Any]) -> int:
    if params.get("seed") is None:
        raise ConfigError("params: seed is missing or null; give it an integer >= 0 (the repository's params.yaml has 42)")
    seed = params["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"params: seed = {seed!r} is not allowed; expected an integer >= 0")
    return seed


def workspace_root(cwd: Path | None = None) -> Path:
    """The folder a relative path in params.yaml (``data.source: ../photos``) is relative to.

    The repository root, which is every stage's working directory; but a DVC experiment run outside
    the workspace (``dvc exp run --queue``, ``--temp``, ``inat-cnn sweep``) runs in a copy of the
    repository that DVC makes at ``<workspace>/.dvc/tmp/exps/...``, where ``../photos`` would point
    inside ``.dvc/tmp``: there, the workspace the experiment was queued from.
    """
    parts = (cwd or Path.cwd()).absolute().parts
    for i in range(len(parts) - 3, 0, -1):  # the innermost copy
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return (cwd or Path.cwd()).absolute()


def run_stage(main: Callable[[dict[str, Any]], None], params_path: str | Path = "params.yaml") -> None:
    """Run a stage's ``main``; a UserError prints ``error: ...`` and exits with status 2."""
    try:
        remove_stale_temps_under()
        main(load_params(params_path))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
