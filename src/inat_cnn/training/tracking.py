"""Where per-epoch training metrics go: dvclive always, an optional W&B mirror.

dvclive writes the curves DVC plots and compares (``<live_dir>/plots/metrics/...``). With
``logging.wandb: true`` the same rows also go to a W&B run, in offline mode unless
``WANDB_API_KEY`` is set (``wandb sync`` uploads offline runs later), so training never waits
on the network.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.config import LoggingConfig

EpochLogger = Callable[[dict[str, float]], None]


def _log_to_live(live: Any, row: dict[str, float]) -> None:
    """The epoch's results as dvclive curves, without timestamps: a re-run writes the same files."""
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        split, name = key.split("_")
        live.log_metric(f"{split}/{name}", row[key], timestamp=False)
    live.log_metric("lr", row["lr"], timestamp=False)
    live.next_step()


def _start_wandb(cfg: LoggingConfig, run_name: str, config: dict[str, Any]) -> Any:
    import wandb

    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    mode = os.environ.get("WANDB_MODE", mode)
    return wandb.init(
        project=cfg.wandb_project, entity=cfg.wandb_entity, name=os.environ.get("DVC_EXP_NAME", run_name),
        job_type=run_name, config=config, mode=mode, dir=os.environ.get("WANDB_DIR", "."),  # ./wandb, git- and dvc-ignored
        settings=wandb.Settings(silent=True, init_timeout=30),
    )


@contextmanager
def epoch_logger(live_dir: Path, cfg: LoggingConfig | None, run_name: str, config: dict[str, Any]) -> Iterator[EpochLogger]:
    """Yield a function that records one epoch's row to dvclive (and W&B when ``cfg`` enables it)."""
    from dvclive import Live

    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        run = _start_wandb(cfg, run_name, config) if cfg is not None and cfg.wandb else None

        def log(row: dict[str, float]) -> None:
            _log_to_live(live, row)
            if run is not None:
                run.log(row, step=int(row["epoch"]))

        try:
            yield log
        finally:
            if run is not None:
                run.finish()
