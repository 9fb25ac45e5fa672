"""Where a study lives: the Optuna storage (:data:`DEFAULT_STORAGE`, a git-ignored SQLite file of
the repository, or a PostgreSQL URL shared by several machines), opened with one clear error
(:func:`connect`), and the drivers' heartbeats (:func:`heartbeat_settings`): a trial whose driver
stopped beating is failed by whichever driver notices, and its configuration asked again
(:func:`retry_stale`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .pruning import open_storage

DEFAULT_STORAGE = ".optuna/sweeps.db"
"""The default storage, relative to the repository root (git-ignored)."""
STALE_AFTER_S = 600
"""--stale-after: seconds without a heartbeat after which another driver's running trial is failed."""
MIN_STALE_AFTER_S = 30
"""A driver is busy for seconds at a time (queueing an experiment, starting workers) between beats."""
RETRY_ATTR = "retry_of"


def default_storage_url(repo: Path) -> str:
    """``sqlite:////abs/path/.optuna/sweeps.db``: absolute, so the queue's workers (in temporary
    copies of the repository) reach the same file."""
    return f"sqlite:///{(Path(repo).resolve() / DEFAULT_STORAGE).as_posix()}"


def connect(url: str, **heartbeat: Any) -> Any:
    """The Optuna storage at ``url`` (``heartbeat``: :func:`heartbeat_settings`, the driver's); one
    line naming the URL when it cannot be opened or reached. Machines that open a new database at
    the same moment all create Optuna's tables, and all but one fail (a unique constraint, "relation
    already exists"): they try again (up to 3 times), and find the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            try:
                storage = open_storage(url, **heartbeat)
                storage.get_all_studies()  # a round trip: an unreachable server fails here
                break
            except (IntegrityError, ProgrammingError):
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, drivers, sockets: all one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--storage {url}: cannot open the Optuna storage ({type(exc).__name__}: {first}); "
                        "check the URL, the server and its driver (postgresql: pip install -e '.[postgres]')") from None
    return storage


def heartbeat_settings(stale_after: int) -> dict[str, Any]:
    """RDBStorage's heartbeat for a driver: a beat about every tenth of ``stale_after`` (1 to 60 s),
    a running trial stale after ``stale_after`` s without one, and :func:`retry_stale` then."""
    return {"heartbeat_interval": max(1, min(60, stale_after // 10)), "grace_period": stale_after,
            "heartbeat_stale_trial_callback": retry_stale}


def retry_stale(study: Any, trial: Any) -> None:
    """Optuna calls this for each trial it failed as stale (its driver stopped beating): the same
    configuration is queued in the study (a waiting trial, the next one asked, anywhere), marked
    ``retry_of`` so the stale one does not count towards ``--trials``."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
    print(f"trial {trial.number} ({trial.user_attrs.get('dvc_exp')}, driven by {trial.user_attrs.get('dvc_repo')}): "
          "no heartbeat from its driver: failed as stale; its configuration is asked again", flush=True)
