"""Shared fixtures: the ../shared real photos and a throw-away copy of this repository for real dvc runs."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from inat_cnn.core.config import FinetuneConfig, Section, TrainConfig, from_dict
from inat_cnn.core.threads import split_cores

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def pytest_configure(config: pytest.Config) -> None:
    """pytest -n N: the N workers (and every stage they run) split the cores. Set in the controller
    before it starts the workers, so each inherits it before it imports torch."""
    split = split_cores(getattr(config.option, "numprocesses", None) or 1)
    if split:  # empty where OMP_NUM_THREADS was set: the user's (or, in a worker, the controller's)
        os.environ.update(split, INAT_CNN_TESTS_SPLIT_CORES="1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with real dvc runs (an `e2e` test) first, in pytest-randomly's order, then the others. pytest-xdist
    hands out whole files in this order (pyproject: --dist loadfile --no-loadscope-reorder), so the long
    files start early and the short unit-test files fill the end; by test count (xdist's default) the
    files of one or two long tests came last, and one worker ran alone for a minute or more."""
    heavy = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)  # stable: the order within each group stays


# The recipe the small training tests were tuned on: no warm-up, label smoothing, weight averaging or
# mixing, and short runs (params.yaml's are the pipeline's, tuned for the full demo run).
PLAIN_RECIPE = {"epochs": 6, "batch_size": 32, "weight_decay": 1e-4, "warmup_epochs": 0, "label_smoothing": 0.0,
                "ema_epochs": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "early_stop_patience": 5}


def merged(base: dict, changes: dict) -> dict:
    """A new mapping: ``base`` with ``changes``, nested mappings merged key by key."""
    return {**copy.deepcopy(base), **{k: merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                                      for k, v in changes.items()}}


def params_with(changes: dict) -> dict:
    """The repository's params with ``changes`` (``{"data": {"source": ...}}``): a params.yaml a stage accepts."""
    return merged(PARAMS, changes)


def config(cls: type, section: str, **changes: object):
    """``cls`` built from params.yaml's ``section`` (``data.synthetic``: a nested one) with ``changes``.

    The config models have no defaults: params.yaml is where they live, so a test takes them from it."""
    node = PARAMS
    for key in section.split("."):
        node = node[key]
    return from_dict(cls, {**node, **changes}, section)


def train_config(**changes: object) -> TrainConfig:
    """params.yaml's `train` with the plain recipe (PLAIN_RECIPE) and ``changes``."""
    return config(TrainConfig, "train", **{**PLAIN_RECIPE, **changes})


def finetune_config(**changes: object) -> FinetuneConfig:
    """params.yaml's `finetune` with the plain recipe (3 epochs) and ``changes``."""
    return config(FinetuneConfig, "finetune", **{**PLAIN_RECIPE, "epochs": 3, **changes})


def replace(cfg: Section, **changes: object):
    """``cfg`` with ``changes``, checked again (dataclasses.replace for the config models)."""
    return type(cfg).model_validate({**dict(cfg), **changes})


@pytest.fixture(scope="session")
def real_photos() -> Path:
    """../shared/real_photos, or a clean skip where it is absent (as on a user's machine)."""
    root = SHARED / "real_photos"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: real-photo tests run only beside the shared folder")
    return root


def tool_env() -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first, so dvc stages find `python`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("GIT_AUTHOR_NAME", "inat-cnn tests")
    env.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "inat-cnn tests")
    env.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`inat-cnn ARGS` run in this process (``inat_cnn.cli.main``), in ``cwd``: its exit code, stdout and
    stderr as a subprocess's. The same argv path without another 3 s of importing torch and torchvision;
    the console script itself runs as a real process (`run(["inat-cnn", ...])`) in test_cli_errors.py and test_predict.py. An
    exception main() does not turn into an exit code fails the test (a subprocess would print a traceback)."""
    from inat_cnn.cli import main

    argv, here = [str(a) for a in args], Path.cwd()
    out, err, code = io.StringIO(), io.StringIO(), 0
    os.chdir(cwd or here)  # not contextlib.chdir: Python 3.10 is supported
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["inat-cnn", *argv], code, out.getvalue(), err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line a refused command printed (exit 2, no traceback, nothing else on stderr)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# tracked, not a pipeline output: what the report shows until `inat-cnn sweep report` replaces it
SWEEP_PLACEHOLDER = "plots/sweep/summary.json"


def copy_project(dest: Path) -> Path:
    """Copy the project's source files (tracked and untracked-not-ignored) and make it a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        outputs = rel.startswith(("metrics/", "plots/", "dvc.lock")) and rel != SWEEP_PLACEHOLDER
        if src.is_file() and not outputs:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], dest)
    return dest


def set_params(repo: Path, updates: dict[str, object]) -> None:
    """Set dotted keys (``train.epochs``) in the copy's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# Small enough that a whole `dvc repro` of the copy takes seconds on two CPU cores.
TINY_PARAMS = {
    "data.synthetic.train_per_class": 10,
    "data.synthetic.test_per_class": 3,
    "data.synthetic.min_side": 48,
    "data.synthetic.max_side": 72,
    "data.synthetic.classes": ["circles", "squares", "stripes"],
    "model.input_size": 32,
    "model.blocks": 3,
    "model.filters": 8,
    "model.dense_units": 16,
    "train.epochs": 2,
    "train.batch_size": 8,
    "prepare.side": 224,  # >= efficientnet_lite0's 224 px input
    "finetune.epochs": 1,
    "finetune.batch_size": 8,
    "evaluate.guided_backprop_neurons": 3,
}


def project_copy(dest: Path, params: dict[str, object]) -> Path:
    """``copy_project`` with ``params`` set, committed."""
    repo = copy_project(dest)
    set_params(repo, params)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project copy"], repo)
    return repo


def built_once(factory: pytest.TempPathFactory, name: str, params: dict[str, object], *targets: str) -> tuple[Path, str]:
    """The project on ``params`` with `dvc repro TARGETS` run (all stages where none) and committed, and what
    `dvc repro` printed. Built once per test run by whichever pytest-xdist worker asks first (the others wait
    on a lock in the run's shared temp folder); never changed: a test that runs dvc works on a copy (copy_tree)."""
    base = factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # popen-gw<N>'s parent: one per run
    root, printed = shared / name, shared / f"{name}.out"
    with FileLock(str(shared / f"{name}.lock")):
        if not printed.exists():  # none yet, or a build that failed half-way: start again
            shutil.rmtree(root, ignore_errors=True)
            repo = project_copy(root, params)
            out = run(["dvc", "repro", *targets], repo).stdout
            run(["git", "add", "-A"], repo)
            run(["git", "commit", "-qm", " ".join(["dvc repro", *targets])], repo)
            printed.write_text(out)
    return root, printed.read_text()


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The project on TINY_PARAMS with the whole pipeline reproduced and committed, and what `dvc repro` printed."""
    return built_once(tmp_path_factory, "reproduced", TINY_PARAMS)


def copy_tree(src: Path, dest: Path) -> Path:
    """``src`` copied to ``dest`` as `cp -a` does: the hard links between a DVC project's outs and its
    cache stay links in the copy (shutil.copytree would make each a second file)."""
    run(["cp", "-a", str(src), str(dest)], src.parent)
    return dest


@pytest.fixture
def repo(reproduced: tuple[Path, str], tmp_path: Path) -> Path:
    """This test's own copy of the reproduced project (its DVC cache, linked outs and git history included)."""
    return copy_tree(reproduced[0], tmp_path / "repo")
