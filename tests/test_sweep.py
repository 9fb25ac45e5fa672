"""Sweeps: the sweep file, -S values and the report (tests/test_sweep_optuna.py: the study driver,
pruning and real queued studies).

The test set decides nothing: sweeps rank by validation accuracy, never by a test-split metric."""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from PIL import Image

from inat_cnn.core.errors import UserError
from inat_cnn.sweep import cli as sweep_cli
from inat_cnn.sweep.cli import add_sweep_commands
from inat_cnn.sweep.queue import format_value, queue_command
from inat_cnn.sweep.report import sweep_report
from inat_cnn.sweep.metric import DEFAULT_METRIC, is_test_metric_file
from inat_cnn.sweep.results import parse_exp_show
from inat_cnn.sweep.spec import Range, Sweep, load_sweep

METRIC = "metrics/train_scratch.json:scratch_val_acc"
TEST_METRIC = "metrics/evaluate_scratch.json:scratch_test_acc"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ the sweep file


def test_the_shipped_sweep_files_load():
    scratch = load_sweep(REPO / "sweeps/scratch.yaml")
    assert list(scratch.params) == [
        "model.filters", "model.filter_organisation", "model.activation", "model.batch_norm", "model.dropout",
        "train.augment", "model.dense_units", "train.lr", "train.batch_size",
    ]
    assert scratch.params["train.lr"] == Range(1e-4, 1e-2, log=True)
    assert scratch.params["model.dropout"] == Range(0.1, 0.4)
    assert scratch.params["model.batch_norm"] == [True, False]
    assert scratch.size == float("inf")  # continuous ranges
    assert (scratch.metric, scratch.goal, scratch.targets) == (METRIC, "maximize", ("train_scratch",))
    finetune = load_sweep(REPO / "sweeps/finetune.yaml")
    assert finetune.metric == "metrics/train_finetune.json:finetune_val_acc" and finetune.targets == ("finetune",)
    assert finetune.params["finetune.arch"] == ["efficientnet_lite0"] and finetune.size == 18


def test_a_sweep_file_reads_1e_4_as_a_number_and_defaults_the_rest(tmp_path):
    sweep = load_sweep(write(tmp_path / "s.yaml", "params:\n  train.lr: [1e-4, 1.0e-3, 3]\n  model.activation: [relu]\n"))
    assert sweep.params == {"train.lr": [1e-4, 1e-3, 3], "model.activation": ["relu"]}
    assert all(isinstance(v, (int, float)) for v in sweep.params["train.lr"])
    assert (sweep.metric, sweep.goal, sweep.targets) == (METRIC, "maximize", ())


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no such sweep file"),
        ("- a\n- b\n", "mapping"),
        ("metric: a.json:b\n", "'params' must be a non-empty mapping"),
        ("params: {}\n", "'params' must be a non-empty mapping"),
        ("params:\n  train.lr: []\n", "train.lr has an empty list"),
        ("params:\n  train.lr: 0.001\n", "train.lr = 0.001 must be a list"),
        ("params:\n  train.lr: {low: 0.1, high: 0.01}\n", "train.lr is an empty range"),
        ("params:\n  train.lr: {low: 0.1, high: 0.1}\n", "train.lr is an empty range"),
        ("params:\n  train.lr: {low: 0, high: 0.1, log: true}\n", "a log range needs low > 0"),
        ("params:\n  train.lr: {low: 0.1, hi: 0.2}\n", "unknown range key 'hi'"),
        ("params:\n  train.lr: {low: a, high: 0.2}\n", "train.lr.low = 'a'"),
        ("params:\n  train.lr: {low: 1, high: 8, step: 0}\n", "train.lr.step = 0"),
        ("params:\n  train.lr: {low: 1.0e-4, high: 0.1, log: true, step: 0.1}\n", "both log and step"),
        ("params:\n  lr: [0.1]\n", "'lr' is not of the form section.key"),
        ("params:\n  train.lr: [0.1, 0.1]\n", "lists a value twice"),
        ("params:\n  train.lr: [0.1]\nmethod: grid\n", "unknown key 'method'"),
        ("params:\n  train.lr: [0.1]\nmetric: accuracy\n", "expected FILE:KEY"),
        ("params:\n  train.lr: [0.1]\ngoal: best\n", "goal = 'best'"),
        ("params:\n  train.lr: [0.1]\ntargets: {a: 1}\n", "targets"),
        ("params: [\n", "not valid YAML"),
    ],
)
def test_load_sweep_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "sweep.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load_sweep(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ the test set decides nothing


def _paths(entries) -> list[str]:
    """A dvc.yaml deps/outs/metrics list: plain paths or ``{path: options}``."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def stages_reading_the_test_split() -> tuple[dict, set[str]]:
    """dvc.yaml's stages, and the names of those that read data/prepared/test directly or through a
    dep written by a stage that does (compare reads metrics/evaluate_*.json)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    written_by = {path: name for name, stage in stages.items()
                  for path in _paths(stage.get("outs")) + _paths(stage.get("metrics"))}
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, stage in stages.items():
            deps = _paths(stage.get("deps"))
            if name not in tainted and ("data/prepared/test" in deps or any(written_by.get(d) in tainted for d in deps)):
                tainted.add(name)
                changed = True
    return stages, tainted


def ranking_metrics() -> dict[str, str]:
    """Where each ranking metric is chosen -> FILE:KEY, read from the sweep files themselves (not
    through load_sweep, so this test stands apart from its refusal)."""
    found = {"DEFAULT_METRIC": DEFAULT_METRIC}
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        found[path.name] = yaml.safe_load(path.read_text()).get("metric", DEFAULT_METRIC)
    return found


def test_every_sweep_and_the_default_rank_by_a_metric_no_test_split_stage_writes():
    stages, tainted = stages_reading_the_test_split()
    assert {"evaluate_scratch", "evaluate_finetune", "compare"} <= tainted  # the check can see them
    metrics = ranking_metrics()
    assert len(metrics) >= 3, metrics  # the default and both sweep files
    for where, metric in metrics.items():
        file = metric.rsplit(":", 1)[0]
        writers = [name for name, stage in stages.items() if file in _paths(stage.get("metrics"))]
        assert len(writers) == 1, f"{where}: {file} is a metrics file of {writers or 'no stage'} in dvc.yaml"
        stage = stages[writers[0]]
        assert "data/prepared/test" not in _paths(stage["deps"]), f"{where}: {metric} is written by {writers[0]}, which reads the test split"
        assert writers[0] not in tainted, f"{where}: {metric} is written by {writers[0]}, downstream of the test split"
        assert "_val_" in metric, f"{where}: {metric} is not a validation metric"


def test_the_refused_files_are_exactly_the_metrics_computed_from_the_test_split():
    stages, tainted = stages_reading_the_test_split()
    for name, stage in stages.items():
        for file in _paths(stage.get("metrics")):
            assert is_test_metric_file(file) == (name in tainted), (name, file)


@pytest.mark.parametrize("metric", [TEST_METRIC, "metrics/evaluate_finetune.json:macro_f1",
                                    "./metrics/evaluate_scratch.json:accuracy", "metrics/compare.json:models"])
def test_load_sweep_refuses_a_metric_from_the_test_split(tmp_path, metric):
    path = write(tmp_path / "sweep.yaml", f"metric: {metric}\nparams:\n  train.lr: [0.1]\n")
    with pytest.raises(UserError) as info:
        load_sweep(path)
    message = str(info.value)
    assert str(path) in message and metric.split(":")[0] in message and "test split" in message
    assert "Rank by validation accuracy instead: metrics/train_" in message and "_val_acc" in message


def test_a_sweep_built_in_code_refuses_a_test_metric_too():
    """The refusal is in Sweep itself: a benchmark's or a script's Sweep(...) is an Optuna objective as well."""
    with pytest.raises(UserError, match=r"sweep metric = .*evaluate_scratch\.json is computed from the test split"):
        Sweep(params={"train.lr": [1e-3]}, metric=TEST_METRIC)


def test_sweep_report_refuses_a_test_metric_from_the_flag_and_from_the_library(tmp_path, monkeypatch):
    def no_dvc(repo):
        raise AssertionError("the refusal comes before `dvc exp show`")

    monkeypatch.setattr(sweep_cli, "exp_show_json", no_dvc)
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="inat-cnn")
    add_sweep_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "report", "--metric", TEST_METRIC])
    with pytest.raises(UserError, match=r"sweep report --metric = .*evaluate_scratch\.json is computed from the test split.*"
                                        r"Rank by validation accuracy instead: metrics/train_scratch\.json:scratch_val_acc"):
        args.func(args)
    with pytest.raises(UserError, match="test split"):
        sweep_report(synthetic_sweep(with_test=True), TEST_METRIC, tmp_path / "p", tmp_path / "r.md")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- -S values


@pytest.mark.parametrize(
    "value",
    [True, False, 32, 0, -3, 0.3, 1e-3, 1e-4, 1e-05, 2.5e-7, 1e20, 100.0, "relu", "same", "efficientnet_lite0",
     "a b", "true", "null", "yes", "1e-4", "x,y", [32, 64, 128], ["a", "b"], None],
)
def test_set_param_values_read_back_with_their_type(value):
    """What `-S key=VALUE` carries: YAML (what a stage reads) and Hydra (what DVC parses) agree."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = format_value(value)
    for parsed in (yaml.safe_load(text), OverridesParser.create().parse_override(f"k={text}").value()):
        assert parsed == value and type(parsed) is type(value), (value, text, parsed)


def test_set_param_values_reject_what_cannot_be_written():
    for bad in (float("nan"), {"a": 1}, "it's \"quoted\""):
        with pytest.raises(UserError):
            format_value(bad)


def test_queue_command_names_the_experiment_and_sets_each_param():
    cmd = queue_command({"train.lr": 1e-4, "model.batch_norm": False}, "s-t3", ["train_scratch"])
    assert cmd == ["dvc", "exp", "run", "--queue", "train_scratch", "-n", "s-t3",
                   "-S", "train.lr=0.0001", "-S", "model.batch_norm=false"]


def test_the_cli_commands_parse(tmp_path, monkeypatch, capsys):
    parser = argparse.ArgumentParser(prog="inat-cnn")
    add_sweep_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "report"])
    assert (args.metric, args.sweep, args.out, args.md, args.top, args.minimize) == (None, None, "plots/sweep", "reports/sweep.md", 10, False)
    args = parser.parse_args(["sweep", "run", str(REPO / "sweeps/scratch.yaml"), "--jobs", "3", "--dry-run", "--study", "s"])
    # no --pruner: None, the study's own (a new study's: halving; test_sweep_machines checks that rule)
    assert (args.sampler, args.pruner, args.trials, args.jobs, args.dry_run) == ("tpe", None, 20, 3, True)
    monkeypatch.chdir(tmp_path)
    args.func(args)
    out = capsys.readouterr().out
    assert out.count("would queue: dvc exp run --queue train_scratch -n s-t") == 3 and "-n s-t2 " in out
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------- the report, synthetic

BASE = {
    "seed": 42,
    "model": {"blocks": 3, "filters": 8, "activation": "relu", "batch_norm": True, "dropout": 0.3},
    "train": {"lr": 0.001, "epochs": 2, "batch_size": 8, "augment": True},
}


def params_with(**dotted) -> dict:
    params = copy.deepcopy(BASE)
    for key, value in dotted.items():
        section, leaf = key.split("__")
        params[section][leaf] = value
    return params


def missing(path: str) -> dict:
    return {"error": {"type": "FileNotFoundError", "msg": f"[Errno 2] No such file or directory: '{path}'"}}


def experiment(name: str, params: dict, accuracy: float | None, state: str | None = "success",
               timestamp: str | None = "2026-01-01T10:00:00", legacy_status: str | None = None,
               test_accuracy: float | None = None, evaluated: bool = True) -> dict:
    """One entry of a commit's "experiments", the shape `dvc exp show --json` (DVC 3.67) writes:
    queued -> executor.state "queued"; running -> "running", timestamp null; failed -> "failed" and
    the rev's error {"msg": "Experiment run failed"}, metrics files missing; a plain `dvc exp run`
    has no executor. Older DVC wrote a "status" field (Success, Failed, Queued, Running) instead.
    ``accuracy`` is the best epoch's validation accuracy (metrics/train_scratch.json, what a sweep
    targeting train_scratch records); ``test_accuracy``, where given, metrics/evaluate_scratch.json
    (an experiment that also ran evaluate_scratch). ``evaluated=False``: evaluate_scratch did not run
    in it (a sweep targeting train_scratch): its lock entry, and so the ``deps`` hash of
    models/scratch.pt, are the baseline's, while ``outs`` has the experiment's new checkpoint."""
    rev = f"{abs(hash(name)):040x}"[:40]
    train_file = (
        {"data": {"scratch_val_acc": accuracy, "scratch_epochs": 2, "scratch_secs": 1.5, "scratch_params": 99}}
        if accuracy is not None
        else missing("metrics/train_scratch.json")
    )
    evaluate_file = (
        {"data": {"scratch_test_acc": test_accuracy, "scratch_test_f1": test_accuracy, "scratch_ece": 0.1}}
        if test_accuracy is not None
        else missing("metrics/evaluate_scratch.json")
    )
    entry = {
        "rev": rev, "name": name,
        "data": {"rev": rev, "timestamp": timestamp, "params": {"params.yaml": {"data": params}},
                 "metrics": {"metrics/train_scratch.json": train_file, "metrics/evaluate_scratch.json": evaluate_file,
                             "metrics/split.json": {"data": {"total": {"train": 24}}}},
                 "deps": {"models/scratch.pt": {"hash": "b" * 32, "size": 9, "nfiles": None}},
                 "outs": {"models/scratch.pt": {"hash": ("b" if evaluated else "c") * 32, "size": 9, "nfiles": None,
                                                "use_cache": True, "is_data_source": False}},
                 "meta": {}},
        "error": {"msg": "Experiment run failed", "type": ""} if state == "failed" else None,
        "experiments": None,
    }
    if legacy_status:
        entry["status"] = legacy_status
    executor = None if state is None else {
        "state": state, "name": "dvc-task",
        "local": {"root": None, "log": None, "pid": None, "returncode": {"success": 0, "failed": 255}.get(state), "task_id": rev},
    }
    return {"revs": [entry], "executor": executor, "name": name}


def exp_show(experiments: list[dict]) -> list[dict]:
    """The whole `dvc exp show --json` list: the workspace row, then the baseline commit's row."""
    workspace = {"rev": "workspace", "name": None, "data": {"rev": "workspace", "timestamp": None, "params": {"params.yaml": {"data": BASE}}, "metrics": {}, "deps": {}, "outs": {}, "meta": {}}, "error": None, "experiments": None}
    baseline = {"rev": "f" * 40, "name": "master", "data": {"rev": "f" * 40, "timestamp": "2026-01-01T09:00:00", "params": {"params.yaml": {"data": BASE}}, "metrics": {}, "deps": {}, "outs": {}, "meta": {}}, "error": None, "experiments": experiments}
    return [workspace, baseline]


def synthetic_sweep(with_test: bool = False) -> list[dict]:
    """24 finished runs where a low lr clearly helps (validation accuracy) and the activation
    barely matters, plus one failed, two queued (one the old way), one running and one finished
    without the metric. ``with_test``: each finished run also carries a test accuracy that runs
    the other way (1 - validation accuracy), so ranking by it would pick an lr=0.01 run."""
    rng = np.random.default_rng(0)
    runs = []
    for i, (lr, act, bn) in enumerate(
        (lr, act, bn) for lr in (0.01, 0.001, 0.0001) for act in ("relu", "gelu", "silu", "mish") for bn in (True, False)
    ):
        acc = 0.3 + 0.2 * [0.01, 0.001, 0.0001].index(lr) + 0.02 * rng.random()
        runs.append(experiment(f"exp-{i + 1}", params_with(train__lr=lr, model__activation=act, model__batch_norm=bn), acc,
                               timestamp=f"2026-01-01T10:{i:02d}:00", state="success" if i else None,
                               test_accuracy=round(1.0 - acc, 6) if with_test else None))
    runs += [
        experiment("broken", params_with(model__activation="swish"), None, "failed", "2026-01-01T09:59:00"),
        experiment("waiting", params_with(train__lr=0.5), None, "queued", "2026-01-01T09:58:00"),
        experiment("old-queued", params_with(train__lr=0.6), None, None, "2026-01-01T09:58:00", legacy_status="Queued"),
        experiment("busy", params_with(train__lr=0.7), None, "running", None),
        experiment("no-metric", params_with(train__lr=0.8), None, "success", "2026-01-01T11:00:00"),
    ]
    return exp_show(runs)


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 400 and img.height >= 200
        assert len(np.unique(np.asarray(img.convert("L")))) > 10  # drawn, not blank


def test_parse_exp_show_reads_names_states_params_and_metrics():
    exps = {e.name: e for e in parse_exp_show(synthetic_sweep())}
    assert {n: e.status for n, e in exps.items() if not n.startswith("exp-")} == {
        "broken": "failed", "waiting": "queued", "old-queued": "queued", "busy": "running", "no-metric": "success"}
    assert exps["exp-1"].status == "success" and exps["exp-1"].params["train.lr"] == 0.01
    assert exps["exp-3"].params["model.activation"] == "gelu" and exps["exp-3"].timestamp == "2026-01-01T10:02:00"


def test_report_ranks_counts_skipped_runs_and_ranks_the_params(tmp_path):
    out, md = tmp_path / "plots/sweep", tmp_path / "reports/sweep.md"
    result = sweep_report(synthetic_sweep(), METRIC, out, md)
    assert (result["used"], result["failed"], result["queued"], result["running"], result["without_metric"]) == (24, 1, 2, 1, 1)
    assert result["failed_names"] == ["broken"]
    best = result["best"]
    assert best["params"]["train.lr"] == 0.0001 and best["value"] > 0.69
    assert result["swept"] == ["model.activation", "model.batch_norm", "train.lr"]  # constant params are not swept
    rows = {r["param"]: r for r in result["importance"]}
    assert set(rows) == set(result["swept"])
    assert result["importance"][0]["param"] == "train.lr" and rows["train.lr"]["importance"] > 0.8
    assert rows["train.lr"]["spearman"] < -0.9 and rows["train.lr"]["kind"] == "numeric"
    assert rows["model.activation"]["kind"] == "categorical" and rows["model.batch_norm"]["kind"] == "boolean"
    assert abs(sum(r["importance"] for r in rows.values()) - 1.0) < 1e-6
    for name in ("metric_vs_created.png", "parallel_coordinates.png", "importance.png"):
        assert_png(out / name)
    csv = (out / "importance.csv").read_text().splitlines()
    assert csv[0] == "param,kind,distinct_values,spearman,importance" and csv[1].startswith("train.lr,numeric,3,-0.9")
    text = md.read_text()
    assert f"**{best['name']}**" in text and f"dvc exp apply {best['name']}" in text
    assert "24 used, 1 failed, 2 queued, 1 running, 1 finished without the metric" in text
    assert "`broken`" in text and "dvc queue logs" in text
    assert "## Top 10 of 24" in text and "| train.lr | numeric | 3 |" in text
    assert "](../plots/sweep/importance.png)" in text


def test_report_names_the_best_by_validation_accuracy_even_where_test_accuracy_disagrees(tmp_path, monkeypatch, capsys):
    rows = synthetic_sweep(with_test=True)
    exps = [e for e in parse_exp_show(rows) if e.status == "success"]
    val = {e.name: e.metrics["metrics/train_scratch.json"]["scratch_val_acc"] for e in exps if e.metrics.get("metrics/train_scratch.json")}
    test = {e.name: e.metrics["metrics/evaluate_scratch.json"]["scratch_test_acc"] for e in exps if e.metrics.get("metrics/evaluate_scratch.json")}
    by_val, by_test = max(val, key=val.get), max(test, key=test.get)
    assert by_val != by_test  # the two rankings disagree, so the test can tell which one was used

    monkeypatch.setattr(sweep_cli, "exp_show_json", lambda repo: rows)  # the rest is the real command
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="inat-cnn")
    add_sweep_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "report", "--sweep", str(REPO / "sweeps/scratch.yaml")])
    args.func(args)
    out = capsys.readouterr().out
    assert f"best by validation accuracy ({METRIC}): {by_val} = {val[by_val]:.4g}" in out
    assert f"next: `dvc exp apply {by_val}`, then `dvc repro` to evaluate the chosen configuration once on the test set" in out
    assert by_test not in out

    text = (tmp_path / "reports/sweep.md").read_text()
    assert f"Ranked by validation accuracy (`{METRIC}`, higher is better)" in text
    assert f"**{by_val}**: validation accuracy = {val[by_val]:.4g}" in text
    assert f"dvc exp apply {by_val}\ndvc repro\n" in text and f"dvc exp apply {by_test}" not in text
    header = next(line for line in text.splitlines() if line.startswith("| rank |"))
    assert header.startswith("| rank | experiment | validation accuracy | test accuracy (not ranked) |")
    first = text.splitlines()[text.splitlines().index(header) + 2]
    assert first.startswith(f"| 1 | {by_val} | {val[by_val]:.4g} | {test[by_val]:.4g} |")
    assert "the ranking and the best configuration come from validation accuracy alone" in text


def test_report_without_test_metrics_has_no_test_column(tmp_path):
    sweep_report(synthetic_sweep(), METRIC, tmp_path / "p", tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "test accuracy" not in text and "| rank | experiment | validation accuracy |" in text


def test_a_test_accuracy_the_experiment_did_not_compute_is_not_shown(tmp_path):
    """A sweep that stops at train_scratch carries the baseline's metrics/evaluate_scratch.json into
    every experiment (measured: 0.28 beside each of 8 trials). Only an experiment whose evaluate stage
    read its own checkpoint shows a test accuracy; with none, there is no test column."""
    stale = [experiment(f"t{i}", params_with(train__lr=lr), 0.3 + i / 10, test_accuracy=0.28, evaluated=False,
                        timestamp=f"2026-01-01T10:0{i}:00") for i, lr in enumerate((0.01, 0.001, 0.0001))]
    sweep_report(exp_show(stale), METRIC, tmp_path / "p", tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "test accuracy" not in text and "0.28" not in text
    assert {e.name: e.stale_inputs for e in parse_exp_show(exp_show(stale))} == {f"t{i}": ("models/scratch.pt",) for i in range(3)}

    mixed = stale + [experiment("full", params_with(train__lr=0.003), 0.35, test_accuracy=0.61, timestamp="2026-01-01T10:09:00")]
    sweep_report(exp_show(mixed), METRIC, tmp_path / "p", tmp_path / "r.md")
    cells = [line.split(" | ") for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| ")]
    rows = {row[1]: row for row in cells if len(row) > 3 and row[1] in {"t0", "t1", "t2", "full"}}
    assert rows["full"][:4] == ["| 3", "full", "0.35", "0.61"]
    assert [rows[f"t{i}"][3] for i in range(3)] == ["", "", ""], rows


def test_report_restricted_to_the_sweep_keys_and_minimising(tmp_path):
    result = sweep_report(synthetic_sweep(), METRIC, tmp_path / "p", tmp_path / "r.md", keys=["train.lr", "model.filters"], higher_is_better=False)
    assert result["swept"] == ["train.lr"]  # model.filters never varied
    assert result["best"]["params"] == {"train.lr": 0.01}
    assert "lower is better" in (tmp_path / "r.md").read_text()


def test_report_of_one_experiment_says_importance_is_impossible(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p/importance.png").write_bytes(b"stale")
    rows = exp_show([experiment("only", params_with(train__lr=0.1), 0.5), experiment("q", BASE, None, "queued")])
    result = sweep_report(rows, METRIC, tmp_path / "p", tmp_path / "r.md")
    assert (result["used"], result["queued"], result["importance"], result["best"]["name"]) == (1, 1, [], "only")
    text = (tmp_path / "r.md").read_text()
    assert "only 1 finished experiment: no parameter importance is possible" in text and "dvc exp apply only" in text
    assert not (tmp_path / "p/importance.png").exists()
    assert_png(tmp_path / "p/metric_vs_created.png")
    assert_png(tmp_path / "p/parallel_coordinates.png")


def test_report_without_finished_experiments_or_without_the_metric_is_a_user_error(tmp_path):
    waiting = exp_show([experiment("q", BASE, None, "queued"), experiment("f", BASE, None, "failed")])
    with pytest.raises(UserError, match=r"no finished experiments; run dvc queue start \(1 queued, 0 running, 1 failed\)"):
        sweep_report(waiting, METRIC, tmp_path / "p", tmp_path / "r.md")
    with pytest.raises(UserError, match=r"has metrics/train_finetune.json:finetune_val_acc; metrics they have: .*train_scratch.json:scratch_val_acc"):
        sweep_report(synthetic_sweep(), "metrics/train_finetune.json:finetune_val_acc", tmp_path / "p", tmp_path / "r.md")
    with pytest.raises(UserError, match="FILE:KEY"):
        sweep_report(synthetic_sweep(), "accuracy", tmp_path / "p", tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()
