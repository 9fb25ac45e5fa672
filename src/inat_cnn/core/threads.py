"""CPU threads per process where several training processes share one machine's cores.

PyTorch gives every process one OpenMP thread per core. Two processes on two cores then run four
busy threads, and each parallel region's barrier waits for a peer the scheduler has put to sleep:
a small CNN trained 20x slower than with one thread each (benchmarks/threads.py, RESULTS.md). So a
sweep's ``dvc queue start -j J`` workers, and pytest's ``-n N`` workers, split the cores between them.
OpenMP reads the variable when torch loads: it must be in the environment before ``import torch``.
"""

from __future__ import annotations

import os
from typing import Mapping

THREADS_ENV = "OMP_NUM_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def split_cores(processes: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment that gives each of ``processes`` concurrent processes its share of the cores;
    empty where the user already chose (``OMP_NUM_THREADS`` set): theirs wins."""
    if THREADS_ENV in environ:
        return {}
    return {THREADS_ENV: str(max(1, usable_cores() // max(1, processes)))}
