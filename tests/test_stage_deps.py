"""Every stage's code deps in dvc.yaml cover every module it runs, read from the code itself.

For each stage, the script its ``cmd`` runs is parsed; every ``import`` of ``inat_cnn`` (at the
top or inside a function) is followed through ``src/`` to its file, transitively. A file in that
closure must be a dep of the stage, itself or through a folder dep. A package's ``__init__.py``
that holds only a docstring runs nothing and need not be listed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    """The file of module ``name`` (``inat_cnn.core.config``) under src/, or None outside the project."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from: its own for __init__.py, else its folder's."""
    parts = path.relative_to(SRC).parent.parts
    return ".".join(parts)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every inat_cnn module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path) if path.is_relative_to(SRC) else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m == "inat_cnn" or m.startswith("inat_cnn.")}


def _runs_code(init: Path) -> bool:
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)) for n in body)


def import_closure(script: Path) -> set[Path]:
    """Every file under src/ that running ``script`` may execute (imports inside functions included)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for module in _imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                file = _module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return {f for f in seen if f.name != "__init__.py" or _runs_code(f)}


def _script(stage: dict) -> Path:
    match = re.search(r"python\S*\s+(\S+\.py)", stage["cmd"])
    assert match, f"cannot find the script in cmd {stage['cmd']!r}"
    return REPO / match.group(1)


def missing_deps(name: str, stages: dict = STAGES) -> list[str]:
    stage = stages[name]
    deps = [REPO / d for d in stage.get("deps", [])]
    script = _script(stage)
    needed = {script} | import_closure(script)
    return sorted(
        str(f.relative_to(REPO)) for f in needed
        if not any(f == d or f.is_relative_to(d) for d in deps)
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(name):
    missing = missing_deps(name)
    assert not missing, f"stage {name!r} runs {', '.join(missing)} but dvc.yaml does not list it in its deps"


def test_the_check_fails_naming_a_dep_that_is_removed(tmp_path):
    """The test above can fail: drop one code dep of a stage and it names that file."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    removed = "src/inat_cnn/training/loop.py"
    deps = stages["train_scratch"]["deps"]
    deps.remove(removed)
    assert missing_deps("train_scratch", stages) == [removed]


def test_a_function_level_import_counts(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from inat_cnn.evaluation.compare import comparison\n")
    closure = {str(p.relative_to(SRC)) for p in import_closure(script)}
    assert "inat_cnn/evaluation/compare.py" in closure and "inat_cnn/core/errors.py" in closure


def test_no_params_key_is_ignored_by_dvcs_run_cache():
    """DVC leaves params keys named size or nfiles out of its run-cache hash (treeverse/dvc#10296)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bad: list[str] = []

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("size", "nfiles"):
                    bad.append(prefix + key)
                walk(value, f"{prefix}{key}.")

    walk(params)
    assert not bad, f"params keys DVC's run cache ignores: {bad}"


def _declared(stage: str) -> list[str]:
    """A stage's outs, then its metrics, as dvc.yaml spells them."""
    entries = [*STAGES[stage].get("outs", []), *STAGES[stage].get("metrics", [])]
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_dvc_yaml_declares_the_paths_the_code_writes():
    """dvc.yaml spells every output for DVC; the code spells them once, in core/outputs.py. They agree,
    for every registered model (its training stage found by its checkpoint) and every other stage."""
    from inat_cnn.core import outputs as o
    from inat_cnn.models.registry import REGISTRY

    posix = lambda paths: [Path(p).as_posix() for p in paths]  # noqa: E731
    for name in REGISTRY:
        files = o.ModelFiles(name)
        (train,) = [s for s in STAGES if files.checkpoint.as_posix() in _declared(s)]
        assert _declared(train) == posix(files.train_outs()), train
        assert _declared(f"evaluate_{name}") == posix(files.evaluate_outs()), name
    assert _declared("download") == posix([o.RAW, o.details_path("download")])
    assert _declared("stratified_split") == posix([o.SPLIT, o.details_path("split")])
    assert _declared("prepare") == posix([*(o.PREPARED / s for s in ("train", "val", "test")), o.details_path("prepare")])
    assert _declared("compare") == posix([o.COMPARE_MD, o.COMPARE_PLOTS, o.details_path("compare")])
    assert _declared("report") == posix([o.REPORT_HTML])
    assert o.SWEEP_PLOTS.as_posix() in STAGES["report"]["deps"]  # the page shows the last sweep report


def test_dvc_yaml_plots_draw_the_files_each_model_writes():
    """`dvc plots show/diff` reads dvclive's curves, the confusion data and the figure folders where
    core/outputs.py says they are: a plot names its files in ``y``, or is a file or folder itself."""
    from inat_cnn.core.outputs import COMPARE_PLOTS, ModelFiles
    from inat_cnn.models.registry import REGISTRY

    plots = [entry for plot in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] for entry in plot.items()]
    drawn = {path for name, spec in plots for path in (spec.get("y") or {name})}
    written = {COMPARE_PLOTS.as_posix()}
    for name in REGISTRY:
        files = ModelFiles(name)
        written |= {files.curve(split, metric).as_posix() for split in ("train", "val") for metric in ("acc", "loss")}
        written |= {files.test_confusion.as_posix(), files.figures.as_posix()}
    assert drawn == written
