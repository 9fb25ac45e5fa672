"""A sweep survives its failures: a killed driver started again resumes without duplicates, and a
trial whose queue worker dies is queued again (real studies, real DVC queue, tiny params). A module of
its own so that pytest-xdist runs it beside test_sweep_optuna.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
from conftest import run, tool_env
from test_sweep_optuna import exps, inat_cnn, load, project, sweep_file  # noqa: F401 (project: the fixture)

from inat_cnn.sweep.pruning import trial_name
from inat_cnn.sweep.results import parse_exp_show
from inat_cnn.sweep.space import distributions, make_sampler
from inat_cnn.sweep.spec import load_sweep
from inat_cnn.sweep.storage import default_storage_url


@pytest.mark.e2e
def test_a_killed_driver_started_again_resumes_without_duplicates(project, tmp_path):
    file = sweep_file(tmp_path, "  train.lr: [1.0e-2, 1.0e-3]\n  train.epochs: [1]\n")
    args = ["inat-cnn", "sweep", "run", str(file), "--study", "kr", "--trials", "2",
            "--jobs", "1", "--sampler", "grid", "--pruner", "none", "--poll", "1"]
    driver = subprocess.Popen(args, cwd=project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in driver.stdout:  # killed as soon as its first trial is queued
        if line.startswith("trial 0: queued"):
            break
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    sweep = load_sweep(file)
    study = optuna.load_study(study_name="kr", storage=default_storage_url(project), sampler=make_sampler("grid", sweep, 0))
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    # a driver killed between asking and queueing: a running trial DVC never heard of
    stale = study.ask(distributions(sweep))
    stale.set_user_attr("dvc_exp", trial_name("kr", stale.number))
    stale.set_user_attr("dvc_repo", study.trials[0].user_attrs["dvc_repo"])

    out = inat_cnn(project, *args[1:]).stdout
    assert "resuming: trial 0 (kr-t0) is" in out
    assert "resuming: trial 1 (kr-t1) was never queued or its queue entry is gone: queueing it again" in out
    study = load(project, "kr")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2, out
    assert sorted(t.params["train.lr"] for t in study.trials) == [1e-3, 1e-2]  # no duplicate, no third trial
    found = exps(project)
    assert {n for n in found if n.startswith("kr-")} == {"kr-t0", "kr-t1"}


@pytest.mark.e2e
def test_a_trial_whose_queue_worker_dies_is_queued_again_and_a_repeated_configuration_is_restored(project, tmp_path):
    """DVC's queue keeps an entry "Running" forever when the worker that took it dies, or stops as it
    takes it (it does not put the message back): the driver sees that nothing runs it and queues it
    again. The sampler then proposes the same configuration (a space of one): DVC's run cache restores it."""
    file = sweep_file(tmp_path, "  train.lr: [5.0e-4]\n  train.epochs: [1]\n")  # no other test trains this one
    args = ["inat-cnn", "sweep", "run", str(file), "--study", "wd", "--trials", "2", "--jobs", "1",
            "--sampler", "random", "--pruner", "none", "--poll", "1"]
    runs, workers = project / ".dvc/tmp/exps/run", project / ".dvc/tmp/exps/celery"
    before = set(runs.glob("*/*.json"))
    driver = subprocess.Popen(args, cwd=project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not set(runs.glob("*/*.json")) - before:  # the trial's `dvc exp exec-run` started
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()
        time.sleep(0.2)
    killed = 0
    for info in workers.glob("dvc-exp-worker-*.json"):
        data = json.loads(info.read_text())
        if data["returncode"] is None:
            try:  # the worker, its experiment and dvc-task's wrapper around them: one process group
                os.killpg(os.getpgid(data["pid"]), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    assert killed
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out
    assert "trial 0 (wd-t0): DVC's queue lost it" in out and "queueing it again" in out, out
    first, again = load(project, "wd").trials
    assert [first.state.name, again.state.name] == ["COMPLETE", "COMPLETE"] and first.value == again.value, out
    assert first.user_attrs["epochs_run"] == 1 and "restored" not in first.user_attrs and list(first.intermediate_values) == [1]
    assert again.user_attrs["epochs_run"] == 0 and again.user_attrs["restored"] and not again.intermediate_values
    assert "trial 1 (wd-t1): complete" in out and "restored from DVC's run cache" in out, out
    shown = parse_exp_show(json.loads(run(["dvc", "exp", "show", "--json"], project).stdout))
    assert sorted(e.status for e in shown if e.name == "wd-t0") == ["failed", "success"]  # the lost entry marked
    queue = run(["dvc", "queue", "status"], project).stdout.splitlines()  # failed, not "Running" for ever
    assert sorted(line.split()[-1] for line in queue if " wd-t0 " in line) == ["Failed", "Success"], queue
