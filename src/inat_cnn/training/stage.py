"""The one training stage: a registered model (models/registry.py) trained on the prepared train and
val splits, its temperature fitted on val, its files written (core/outputs.py).

``stages/train_scratch.py`` and ``stages/finetune.py`` are each one call of :func:`train_stage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..core.config import LoggingConfig, from_dict
from ..core.errors import fields_named
from ..core.outputs import PREPARED, ModelFiles
from ..core.stage_runner import seed_param
from ..models.registry import model_entry


def train_stage(name: str, params: dict[str, Any], script: str, root: Path = Path("."),
                make_hook: Callable[[], Any] | None = None) -> None:
    """Train model ``name`` from ``params`` (its sections, ``seed``, ``logging``): the stage ``script``
    relaunches itself under torchrun for ``processes`` > 1, and rank 0 writes the outputs.
    ``make_hook`` (a sweep's pruner, ``sweep.pruning.epoch_hook_from_env``) is called after the relaunch."""
    entry = model_entry(name)
    arch, cfg = entry.configs(params)
    logging = from_dict(LoggingConfig, params.get("logging"), "logging")
    seed = seed_param(params)
    from .distributed import relaunch

    relaunch(cfg.processes, script)  # processes > 1: the script again, under torchrun
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from ..core.device import seed_everything
    from ..core.files import write_json
    from ..core.outputs import write_training_results
    from ..data.prepared import read_meta
    from ..evaluation.calibration import calibrate_checkpoint
    from .distributed import is_main_process
    from .loop import train_on_split

    files, prepared = ModelFiles(name, root), root / PREPARED
    meta = read_meta(prepared / "train")
    seed_everything(seed)
    with fields_named(f"params: {entry.sections[-1]}."):
        built = entry.build(arch, cfg, meta["class_names"], meta["side"])
    main_process = is_main_process()  # under torchrun, rank 0 writes the outputs
    if main_process:
        if built.banner:
            print(built.banner, flush=True)
        write_json(files.details("model"), built.details)
    with fields_named(f"params: {entry.train_section}."):
        result = train_on_split(
            built.model, built.spec, cfg, seed=seed, prepared_dir=prepared, checkpoint_path=files.checkpoint,
            live_dir=files.train_live, param_groups=built.param_groups, logging=logging,
            run_config={"seed": seed, **{s: params.get(s) for s in entry.sections}},
            resume_path=files.resume, epoch_hook=make_hook() if make_hook else None,
        )
        if not main_process:
            return
        calibration = calibrate_checkpoint(files.checkpoint, prepared, batch_size=cfg.batch_size, device=cfg.device)
    print(f"temperature fitted on val: {calibration.describe()}", flush=True)
    write_training_results(files, result.summary(), result.timing(), calibration.to_dict(), built.details["params"])
