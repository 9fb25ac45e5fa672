"""Processes that share the cores split them: the sweep's queue workers and pytest's workers."""

from __future__ import annotations

import os

import pytest
import torch

from inat_cnn.core import threads
from inat_cnn.core.threads import THREADS_ENV, split_cores, usable_cores


@pytest.mark.parametrize(("cores", "processes", "each"), [(8, 2, "4"), (8, 3, "2"), (2, 2, "1"), (2, 16, "1"), (4, 1, "4")])
def test_each_process_gets_its_share_of_the_cores(monkeypatch, cores: int, processes: int, each: str):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    assert split_cores(processes, {}) == {THREADS_ENV: each}


def test_a_thread_count_the_user_chose_wins():
    assert split_cores(2, {THREADS_ENV: "3"}) == {}


def test_this_pytest_worker_runs_torch_on_its_share():
    """conftest's pytest_configure: under `pytest -n N` each worker's torch has cores // N threads."""
    if os.environ.get("INAT_CNN_TESTS_SPLIT_CORES") != "1":
        pytest.skip("OMP_NUM_THREADS was set before pytest started: the user's choice")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    assert os.environ[THREADS_ENV] == str(max(1, usable_cores() // workers))
    assert torch.get_num_threads() == int(os.environ[THREADS_ENV])
