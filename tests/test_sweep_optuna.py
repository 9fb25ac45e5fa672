"""Optuna proposes, DVC's queue runs: search spaces, samplers, the pruning hook, the study report,
and real studies whose trials are real DVC experiments run by a real queue (tiny params)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import TINY_PARAMS, built_once, cli, copy_tree, run
from test_sweep import assert_png, experiment, exp_show, params_with

from inat_cnn.core.errors import UserError
from inat_cnn.sweep.pruning import (
    JUDGED_FROM_EPOCH, STORAGE_ENV, STUDY_ENV, epoch_hook_from_env, make_pruner, trial_name, trial_number,
)
from inat_cnn.sweep.report import sweep_report
from inat_cnn.sweep.results import parse_exp_show
from inat_cnn.sweep.spec import load_sweep
from inat_cnn.sweep.driver import dry_run
from inat_cnn.sweep.space import config_of, distributions, make_sampler
from inat_cnn.sweep.storage import connect, default_storage_url

METRIC = "metrics/train_scratch.json:scratch_val_acc"


def sweep_file(tmp_path: Path, params: str, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"targets: [train_scratch]\nparams:\n{params}")
    return path


# ------------------------------------------------------------------------------- search spaces


def test_ranges_become_optuna_distributions_and_lists_stay_categorical(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, "  train.lr: {low: 1e-5, high: 1.0e-2, log: true}\n"
                                            "  model.dense_units: {low: 16, high: 64, step: 16}\n"
                                            "  model.filters: [8, [8, 16, 32]]\n  model.activation: [relu, gelu]\n"))
    space = distributions(sweep)
    assert space["train.lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    assert space["model.dense_units"] == optuna.distributions.IntDistribution(16, 64, step=16)
    assert sweep.params["model.dense_units"].values() == [16, 32, 48, 64]
    params = {"train.lr": 1e-3, "model.dense_units": 32, "model.filters": "[8, 16, 32]", "model.activation": "gelu"}
    assert config_of(sweep, params)["model.filters"] == [8, 16, 32]  # a list value round-trips through Optuna
    with pytest.raises(UserError, match=r"tiny.yaml: train.lr is a continuous range; a grid needs"):
        make_sampler("grid", sweep, 0)


def test_one_code_path_for_every_sampler_grid_covers_the_grid_once(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, "  train.lr: [0.1, 0.01, 0.001]\n  model.dense_units: {low: 16, high: 32, step: 16}\n"))
    cmds = dry_run(sweep, study_name="g", jobs=6, sampler="grid", seed=0)
    configs = {tuple(c[c.index("-S"):]) for c in cmds}
    assert len(configs) == 6 and [c[6] for c in cmds] == [f"g-t{i}" for i in range(6)]
    assert dry_run(sweep, study_name="r", jobs=4, sampler="random", seed=1) == dry_run(sweep, study_name="r", jobs=4, sampler="random", seed=1)
    tpe = make_sampler("tpe", sweep, 0)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._constant_liar


def test_trial_names_carry_the_study_and_the_number():
    assert trial_name("scratch", 7) == "scratch-t7"
    assert trial_number("scratch-t7", "scratch") == 7
    assert trial_number("scratch-t7", "scr") is None and trial_number("exp-1a2b3", "scratch") is None
    with pytest.raises(UserError, match=r"--pruner = 'fast'"):
        make_pruner("fast")


@pytest.mark.parametrize("name", ["halving", "median"])
def test_the_pruners_judge_no_trial_during_the_warm_up_epochs(name):
    study = optuna.create_study(direction="maximize", pruner=make_pruner(name))
    for value in (0.9, 0.8, 0.85, 0.88, 0.82):  # finished trials, good at every epoch
        trial = study.ask()
        for epoch in range(1, 10):
            trial.report(value, epoch)
            trial.should_prune()  # as the hook asks every epoch (successive halving records rungs here)
        study.tell(trial, value)
    poor = study.ask()
    verdicts = []
    for epoch in range(1, 10):
        poor.report(0.1, epoch)
        verdicts.append(poor.should_prune())
    assert verdicts[: JUDGED_FROM_EPOCH - 1] == [False] * (JUDGED_FROM_EPOCH - 1), verdicts  # warm-up: never
    assert any(verdicts), verdicts  # ... and pruned once judged


def test_hyperband_brackets_start_after_the_warm_up_epochs():
    # its brackets are successive-halving pruners from min_resource on (which trial meets which is hashed)
    assert make_pruner("hyperband")._min_resource == JUDGED_FROM_EPOCH


@pytest.mark.parametrize("url", ["nosuchdb://x/y", "postgresql://nobody@127.0.0.1:1/optuna"])
def test_a_storage_that_cannot_be_reached_is_one_line(url):
    with pytest.raises(UserError, match=r"^--storage " + url.replace(".", r"\.") + r": cannot open the Optuna storage") as info:
        connect(url)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- the pruning hook


def test_pruning_is_off_outside_a_sweep_and_on_for_a_trial_of_the_study(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    assert epoch_hook_from_env({}) is None
    assert epoch_hook_from_env({STORAGE_ENV: url, STUDY_ENV: "s", "DVC_EXP_NAME": "exp-12345"}) is None  # not a trial
    study = optuna.create_study(study_name="s", storage=connect(url), direction="maximize")
    study.set_user_attr("pruner", "below:0.5")
    study.set_user_attr("epoch_key", "val_acc")
    trial = study.ask()
    hook = epoch_hook_from_env({STORAGE_ENV: url, STUDY_ENV: "s", "DVC_EXP_NAME": trial_name("s", trial.number)})
    assert hook is not None
    assert hook({"epoch": 1, "val_acc": 0.8, "val_loss": 1.0}) is False
    assert hook({"epoch": 2, "val_acc": 0.3, "val_loss": 1.2}) is True
    assert study.trials[0].intermediate_values == {1: 0.8, 2: 0.3}
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert hook({"epoch": 3, "val_acc": 0.3}) is False  # told already: training goes on, never a failure
    assert "could not report epoch 3" in capsys.readouterr().out
    gone = epoch_hook_from_env({STORAGE_ENV: f"sqlite:///{tmp_path}/none.db", STUDY_ENV: "s", "DVC_EXP_NAME": "s-t0"})
    assert gone is None and "pruning off" in capsys.readouterr().out
    # a worker an earlier driver started (its study "old" in the environment) runs this study's trial
    second = study.ask()
    assert epoch_hook_from_env({STORAGE_ENV: url, STUDY_ENV: "old", "DVC_EXP_NAME": trial_name("s", second.number)}) is not None
    assert f"trial {second.number} of study 's'" in capsys.readouterr().out


# ------------------------------------------------------------------------------- the study report


def test_the_report_of_a_study_ranks_complete_trials_and_draws_the_pruned_curves(tmp_path):
    study = optuna.create_study(direction="maximize")
    space = {"train.lr": optuna.distributions.CategoricalDistribution([0.1, 0.01, 0.001])}
    runs = []
    for i, (lr, acc, state) in enumerate([(0.1, 0.4, "COMPLETE"), (0.01, 0.6, "COMPLETE"), (0.001, 0.9, "COMPLETE"),
                                          (0.1, 0.95, "PRUNED")]):
        name = f"st-t{i}"
        study.add_trial(optuna.trial.create_trial(
            params={"train.lr": lr}, distributions=space, value=acc if state == "COMPLETE" else None,
            state=getattr(optuna.trial.TrialState, state), intermediate_values={1: acc - 0.1, 2: acc} if state == "COMPLETE" else {1: acc},
            user_attrs={"dvc_exp": name, "epochs_run": 2 if state == "COMPLETE" else 1}))
        runs.append(experiment(name, params_with(train__lr=lr), acc, timestamp=f"2026-01-01T10:0{i}:00"))
    runs.append(experiment("not-in-the-study", params_with(train__lr=0.5), 0.99))
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.1}, distributions=space, state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"dvc_exp": "st-t4"}))
    result = sweep_report(exp_show(runs), METRIC, tmp_path / "p", tmp_path / "r.md", study=study)
    assert result["best"]["name"] == "st-t2" and result["used"] == 3 and result["pruned"] == 1
    assert result["trials"] == 5 and result["epochs"] == 7 and result["absent"] == ["st-t4"]
    assert {r["param"] for r in result["importance"]} == {"train.lr"}
    for name in ("metric_vs_created.png", "parallel_coordinates.png", "importance.png", "trial_curves.png"):
        assert_png(tmp_path / "p" / name)
    text = (tmp_path / "r.md").read_text()
    assert "Trials: 5 (3 complete, 1 fail, 1 pruned); epochs spent: 7" in text and "`st-t4`" in text
    assert "not-in-the-study" not in text and "| train.lr | numeric | 3 |" in text


# ------------------------------------------------------------------------------- real studies


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed copy of the project on tiny params with its data stages run and locked: the module's own
    copy (its studies, queue and experiments) of one built once per test run."""
    base, _ = built_once(tmp_path_factory, "sweep-project",
                         {**TINY_PARAMS, "data.synthetic.train_per_class": 6, "prepare.side": 32, "train.epochs": 2}, "prepare")
    return copy_tree(base, tmp_path_factory.mktemp("sweep") / "project")


def inat_cnn(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["inat-cnn", *args], repo, check=check, timeout=600)


def load(repo: Path, name: str):
    return optuna.load_study(study_name=name, storage=default_storage_url(repo))


def exps(repo: Path) -> dict:
    return {e.name: e for e in parse_exp_show(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))}


@pytest.mark.e2e
def test_a_study_runs_trials_as_dvc_experiments_a_failed_one_fails_and_the_best_meets_the_test_set_once(project, tmp_path, capsys):
    file = sweep_file(tmp_path, "  model.activation: [relu, swish]\n  train.epochs: [1]\n")  # swish: refused (exit 2)
    start = time.monotonic()
    out = inat_cnn(project, "sweep", "run", str(file), "--study", "act", "--trials", "2", "--jobs", "2",
                   "--sampler", "grid", "--pruner", "none", "--poll", "1").stdout
    wall = time.monotonic() - start
    study = load(project, "act")
    states = {t.params["model.activation"]: t.state.name for t in study.trials}
    assert states == {"relu": "COMPLETE", "swish": "FAIL"}, out
    good = next(t for t in study.trials if t.state.name == "COMPLETE")
    found = exps(project)
    assert found[good.user_attrs["dvc_exp"]].status == "success"
    assert good.value == found[good.user_attrs["dvc_exp"]].metrics["metrics/train_scratch.json"]["scratch_val_acc"]
    assert not found[good.user_attrs["dvc_exp"]].metrics.get("metrics/evaluate_scratch.json")  # trials: validation only
    assert "the experiment failed: dvc queue logs act-t" in next(t for t in study.trials if t.state.name == "FAIL").user_attrs["fail_reason"]
    summary = json.loads((project / "plots/sweep/summary.json").read_text())  # the run ends with its report
    assert summary["best"]["name"] == good.user_attrs["dvc_exp"] and "wrote reports/sweep.md" in out, out

    report = inat_cnn(project, "sweep", "report", "--study", "act").stdout
    assert f"best by validation accuracy ({METRIC}): {good.user_attrs['dvc_exp']}" in report
    assert "Trials: 2 (1 complete, 1 fail)" in (project / "reports/sweep.md").read_text()

    best = inat_cnn(project, "sweep", "best", "--study", "act", "--evaluate").stdout
    assert f"trial {good.number} ({good.user_attrs['dvc_exp']}) applied and evaluated once on the test set" in best
    assert load(project, "act").user_attrs["test_evaluation"]["exp"] == good.user_attrs["dvc_exp"]
    again = inat_cnn(project, "sweep", "best", "--study", "act", "--evaluate", check=False)
    assert again.returncode == 2 and "the test set is measured once per study" in again.stderr
    run(["git", "checkout", "-q", "--", "."], project)  # the applied params back to the committed ones
    run(["git", "clean", "-fq", "--", "metrics", "reports"], project)
    with capsys.disabled():
        print(f"\n2 trials with --jobs 2 (one failing), study + queue + collection: {wall:.1f} s")


@pytest.mark.e2e
def test_a_pruned_trial_is_a_finished_experiment_that_says_when_it_stopped(project, tmp_path):
    """The queue's workers inherit the driver's environment: the stage finds its trial and prunes."""
    file = sweep_file(tmp_path, "  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    out = inat_cnn(project, "sweep", "run", str(file), "--study", "pr", "--trials", "1", "--pruner", "below:1.01", "--poll", "1").stdout
    trial = load(project, "pr").trials[0]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1], out
    exp = exps(project)["pr-t0"]
    assert exp.status == "success"
    train = exp.metrics["metrics/train_scratch.json"]
    assert train["scratch_pruned_at"] == 1 and train["scratch_epochs"] == 1
    assert "trial 0 (pr-t0): pruned" in out and "after epoch 1" in out


@pytest.mark.e2e
def test_bad_input_is_one_line_before_anything_is_queued(project, tmp_path):
    def tasks() -> list[str]:  # the queue's tasks; not its worker line ("0 active, 1 idle"): an earlier
        # test's idle worker exits 10 s after its queue empties, whenever that falls
        return [line for line in run(["dvc", "queue", "status"], project).stdout.splitlines() if not line.startswith("Worker")]

    before = tasks()
    unknown = sweep_file(tmp_path, "  train.lrate: [0.1]\n")
    proc = cli("sweep", "run", unknown, "--trials", "1", cwd=project)  # in-process: nothing to queue
    assert proc.returncode == 2 and "params key 'train.lrate' is not a param of this pipeline" in proc.stderr
    proc = cli("sweep", "run", sweep_file(tmp_path, "  train.lr: [0.1]\n"), "--storage", "postgresql://nobody@127.0.0.1:1/x",
               cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "cannot open the Optuna storage" in proc.stderr
    assert tasks() == before
