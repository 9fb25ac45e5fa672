"""Real `dvc exp run` experiments on the reproduced pipeline (conftest's ``reproduced``), as a user
compares runs: which stages an experiment re-runs, what `dvc exp show` prints, and `dvc plots diff`
pages that draw offline. A test that runs dvc works on its own copy of the repository (conftest's ``repo``,
or a copy of ``two_lrs``, the two experiments on train.lr that two tests read). A module of its own so
that pytest-xdist runs it beside test_pipeline_e2e.py, not after it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, copy_tree, run, tool_env
from test_pipeline_e2e import _chromium, ran

pytestmark = pytest.mark.e2e

LRS = {"lr-a": 0.01, "lr-b": 0.002}  # docs/pipeline.md's two experiments


@pytest.fixture(scope="module")
def two_lrs(reproduced: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the reproduced project with docs/pipeline.md's two experiments on train.lr run, and what each
    `dvc exp run` printed. Its tests only read it; one that changes the repository does so in a copy."""
    repo = copy_tree(reproduced[0], tmp_path_factory.mktemp("lrs") / "repo")
    return repo, {name: run(["dvc", "exp", "run", "-S", f"train.lr={lr}", "-n", name], repo).stdout for name, lr in LRS.items()}

LEADERBOARD_KEYS = {f"scratch_{k}" for k in ("val_acc", "epochs", "secs", "params", "test_acc", "test_f1", "ece")}


def test_an_evaluate_param_reruns_the_evaluations_and_the_report_only(repo: Path):
    out = run(["dvc", "exp", "run", "-S", "evaluate.grid_cols=2", "-n", "grid-2"], repo).stdout
    # compare runs too unless its inputs came out the same (the grid is a figure, not a metric)
    evaluations = ["evaluate_scratch", "evaluate_finetune"]
    assert ran(out) in ([*evaluations, "report"], [*evaluations, "compare", "report"]), out
    assert "Stage 'train_scratch' didn't change" in out and "Stage 'finetune' didn't change" in out


def test_an_experiment_with_another_lr_shows_its_own_metrics(two_lrs: tuple[Path, dict[str, str]]):
    repo, outs = two_lrs
    for out in outs.values():
        assert ran(out) == ["train_scratch", "evaluate_scratch", "compare", "report"], out
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    names = {r["name"]: r for row in rows for e in (row.get("experiments") or []) for r in e.get("revs", [])}
    assert set(LRS) <= set(names), json.dumps(rows)[:2000]
    for name, lr in LRS.items():
        assert names[name]["data"]["params"]["params.yaml"]["data"]["train"]["lr"] == lr
    data = names["lr-a"]["data"]
    assert "scratch_val_acc" in data["metrics"]["metrics/train_scratch.json"]["data"]
    # the leaderboard: each changed metric and param a column under its bare key (no file:key), so
    # that, without the hash columns of the files that changed (named by path), the table fits 160 columns
    columns = run(["dvc", "exp", "show", "--only-changed", "--csv"], repo).stdout.splitlines()[0].split(",")
    board = [c for c in columns if "/" not in c]
    assert board[:4] == ["Experiment", "rev", "typ", "Created"] and len(board) <= 14, columns
    assert "train.lr" in board and {c for c in board[4:] if c != "train.lr"} <= LEADERBOARD_KEYS, board
    proc = subprocess.run(["dvc", "exp", "show", "--only-changed", "--drop", ".*/", "--no-pager"], cwd=repo,
                          env={**tool_env(), "COLUMNS": "160"}, capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert all(name in proc.stdout for name in LRS) and "…" not in proc.stdout and max(map(len, lines)) <= 160, proc.stdout


def test_a_finetune_experiment_with_freeze_all_trains_the_head_only(repo: Path):
    out = run(["dvc", "exp", "run", "-S", "finetune.strategy=freeze_all", "-n", "ft-freeze-all"], repo).stdout
    assert ran(out) == ["finetune", "evaluate_finetune", "compare", "report"], out
    assert "freeze_all" in out
    model = json.loads((repo / "metrics/details/model_finetune.json").read_text())
    assert model["strategy"] == "freeze_all"
    assert model["trainable_params"] == 1280 * 3 + 3  # EfficientNet-Lite0's head for the 3 classes


# --- `dvc plots show/diff` pages draw offline: .dvc/config's plots.html_template inlines vega ---------------

VEGA_SPEC = re.compile(r"var spec = (.*?);\n\s*vegaEmbed\('#([^']+)'")


def _vega_plots(page: Path) -> dict[str, dict]:
    """The vega plots of a page DVC wrote: {div id: spec} (dvc_render's VegaRenderer.DIV embeds each one so)."""
    return {div: json.loads(spec) for spec, div in VEGA_SPEC.findall(page.read_text(encoding="utf8"))}


def _open_offline(page: Path, profile: Path, screenshot: Path | None = None) -> tuple[list[str], list[str], list[str]]:
    """Open a page in headless Chromium that may load file: URLs only. Returns the vega plot divs that drew (an
    svg or canvas inside), the non-file URLs it tried (each aborted) and its console errors and page errors."""
    browser = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
    divs = list(_vega_plots(page))
    drawn_js = "ids => ids.filter(i => document.getElementById(i)?.querySelector('svg, canvas'))"
    blocked, problems = [], []

    def route(r):
        if r.request.url.startswith("file:"):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=browser, headless=True, viewport={"width": 1280, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            context.route("**/*", route)
            tab = context.new_page()
            tab.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.goto(page.as_uri(), wait_until="load")
            if not blocked:  # vegaEmbed draws asynchronously; a page whose libraries were blocked never will
                try:
                    tab.wait_for_function(f"ids => ({drawn_js})(ids).length === ids.length", arg=divs, timeout=30_000)
                except sync_api.TimeoutError:
                    pass  # the assertion on what drew says which did not
            drawn = tab.evaluate(drawn_js, divs)
            if screenshot:
                tab.screenshot(path=screenshot, full_page=True)
        finally:
            context.close()
    return drawn, blocked, problems


def test_the_offline_plots_template_is_configured_and_holds_the_pinned_libraries():
    """.dvc/config names the template (DVC resolves a relative plots.html_template against .dvc/); it has DVC's
    plots placeholder, no scripts placeholder (DVC's CDN tags), nothing to fetch, and the versions its refresh
    script pins (a PINS edit without a rerun of the script fails here)."""
    import runpy

    configured = run(["dvc", "config", "plots.html_template"], REPO).stdout.strip()
    template = REPO / ".dvc" / configured
    assert template == REPO / ".dvc/plots/offline.html" and template.is_file()
    page = template.read_text(encoding="utf8")
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    pins = runpy.run_path(str(REPO / ".dvc/plots/refresh_offline_html.py"))["PINS"]
    assert set(pins) == {"vega", "vega-lite", "vega-embed"}
    for name, version in pins.items():
        assert f"/* {name}@{version}, {name}/build/{name}.min.js" in page, (name, version)
        assert f"{name}@{version} (" in (REPO / ".dvc/plots/offline-LICENSES.txt").read_text(encoding="utf8")


def test_plots_diff_of_two_experiments_draws_offline(two_lrs: tuple[Path, dict[str, str]], tmp_path: Path):
    """`dvc plots diff <exp> <exp>` with the repository's template: each learning curve overlays both runs and
    each confusion matrix shows both, and every vega plot draws in Chromium with every non-file request
    aborted, without an error. DVC's default page, written from the same runs, asks the CDN and draws nothing."""
    _chromium()  # skip before training when there is no browser
    pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
    repo = copy_tree(two_lrs[0], tmp_path / "repo")  # this test changes .dvc/config below
    run(["dvc", "plots", "diff", "lr-a", "lr-b", "-o", str(tmp_path / "offline")], repo)
    page = tmp_path / "offline/index.html"
    plots = _vega_plots(page)
    assert len(plots) == 6, list(plots)  # accuracy, loss and confusion matrix of each model (dvc.yaml's plots:)
    for div, spec in plots.items():
        assert {v["rev"] for v in spec["data"]["values"]} == {"lr-a", "lr-b"}, div
        by_run = spec["facet"]["column"] if "confusion" in div else spec["encoding"]["color"]
        assert by_run["field"] == "rev", div  # curves: one colour per run in one chart; matrices: one per run

    drawn, blocked, problems = _open_offline(page, tmp_path / "profile-offline", tmp_path / "plots_diff.png")
    assert drawn == list(plots) and blocked == [] and problems == []
    assert (tmp_path / "plots_diff.png").stat().st_size > 100_000

    run(["dvc", "config", "--unset", "plots.html_template"], repo)
    run(["dvc", "plots", "diff", "lr-a", "lr-b", "-o", str(tmp_path / "default")], repo)
    drawn, blocked, problems = _open_offline(tmp_path / "default/index.html", tmp_path / "profile-default")
    assert drawn == [] and any(u.startswith("https://cdn.jsdelivr.net/npm/vega") for u in blocked), blocked
    assert any("vegaEmbed is not defined" in p for p in problems), problems
