"""What every stage script shares: read params.yaml, run, turn bad input into one clear line.

A stage script is ``run_stage(main)`` where ``main(params: dict) -> None`` builds its typed
config from its own params section, calls the library and writes its declared outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import UserError


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
    return params


def seed_param(params: dict[str, Any]) -> int:
    seed = params.get("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"params: seed = {seed!r} is not allowed; expected an integer >= 0")
    return seed


def run_stage(main: Callable[[dict[str, Any]], None], params_path: str | Path = "params.yaml") -> None:
    """Run a stage's ``main``; a UserError prints ``error: ...`` and exits with status 2."""
    try:
        main(load_params(params_path))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
