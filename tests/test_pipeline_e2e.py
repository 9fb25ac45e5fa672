"""Real `dvc` in a temporary git repository: the pipeline as a user runs it.

The pipeline is reproduced once per test run (conftest's ``reproduced``, shared with
test_experiments_e2e.py and test_remote.py); every test that runs dvc works on its own copy of that
repository (conftest's ``repo``), so each test passes alone and in any order.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_PARAMS, project_copy, run, set_params

pytestmark = pytest.mark.e2e

STAGES = ("download", "stratified_split", "prepare", "train_scratch", "evaluate_scratch", "finetune", "evaluate_finetune", "compare", "report")
FIGURES = {"confusion_matrix.png", "predictions_grid.png", "filters.png", "feature_maps.png", "guided_backprop.png",
           "reliability.png"}


def ran(out: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in out]


def md5s(root: Path, paths: list[str]) -> dict[str, str]:
    files = {}
    for rel in paths:
        p = root / rel
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                files[str(f.relative_to(root))] = hashlib.md5(f.read_bytes()).hexdigest()
    return files


def test_stage_deps_never_read_the_test_set_before_evaluation():
    """Only the evaluate stages depend on the test images (the dataset's own val/ folder); prepare
    caches them (decode + resize only) in an out of their own, data/prepared/test."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    test_data = ("data/raw/test", "data/raw", "data/prepared/test", "data/prepared")
    readers = {name for name, st in stages.items() if any(str(d).startswith(test_data[0]) or d in test_data for d in st.get("deps", []))}
    assert readers == {"prepare", "evaluate_scratch", "evaluate_finetune"}, readers
    for stage in ("train_scratch", "finetune"):
        assert not any("test" in str(d) for d in stages[stage]["deps"]), stage


def test_data_stages_repro_then_nothing_changes_then_only_split_reruns(tmp_path: Path):
    repo = project_copy(tmp_path / "repo", TINY_PARAMS)
    out = run(["dvc", "repro", "stratified_split"], repo).stdout
    assert ran(out) == ["download", "stratified_split"]
    counts = json.loads((repo / "metrics/details/split.json").read_text())["counts"]
    assert sorted(counts) == ["circles", "squares", "stripes"]
    assert all(c["train"] + c["val"] == 10 for c in counts.values())

    assert ran(run(["dvc", "repro", "stratified_split"], repo).stdout) == []
    assert "changed" not in run(["dvc", "status", "stratified_split"], repo).stdout

    set_params(repo, {"data.val_fraction": 0.3})
    assert ran(run(["dvc", "repro", "stratified_split"], repo).stdout) == ["stratified_split"]
    counts = json.loads((repo / "metrics/details/split.json").read_text())["counts"]
    assert all(c["val"] == 3 for c in counts.values())


def test_full_repro_writes_every_result_and_its_plots_render(reproduced: tuple[Path, str], repo: Path):
    assert ran(reproduced[1]) == list(STAGES)
    compared = json.loads((repo / "metrics/details/compare.json").read_text())
    assert set(compared["models"]) == {"scratch CNN", "efficientnet_lite0 (freeze_first_k)"}
    assert compared["best_by_val_accuracy"] in compared["models"]
    for row in compared["models"].values():
        assert 0 <= row["test_accuracy"] <= 1 and row["params"] > 0 and row["flops_per_image"] > 0
        assert set(row["per_class_accuracy"]) == {"circles", "squares", "stripes"}
    report = (repo / "reports/compare.md").read_text()
    assert "scratch CNN" in report and "efficientnet_lite0" in report
    assert {p.name for p in (repo / "plots/compare").glob("*.png")} == {"learning_curves.png", "per_class_accuracy.png"}
    layouts = {}
    for model in ("scratch", "finetune"):
        for kind in ("model", "train", "timing", "evaluate"):
            assert json.loads((repo / f"metrics/details/{kind}_{model}.json").read_text())
        layouts[model] = sorted(json.loads((repo / f"metrics/details/evaluate_{model}.json").read_text()))
        # the temperature fitted on val by the training stage, stored in the checkpoint, measured on test
        fitted = json.loads((repo / f"metrics/details/train_{model}.json").read_text())["calibration"]
        tested = json.loads((repo / f"metrics/details/evaluate_{model}.json").read_text())["calibration"]
        assert tested["temperature"] == fitted["temperature"] > 0 and tested["ece_bins"] == 15
        assert all(0 <= tested[k] <= 1 for k in ("ece_before", "ece_after"))
        assert {p.name for p in (repo / "plots" / model).glob("*.png")} == FIGURES
    assert layouts["scratch"] == layouts["finetune"]  # one evaluation code, one metrics layout

    page = (repo / "reports/index.html").read_text()
    for heading in ("1 The data", "Part A: scratch CNN", "The hyper-parameter sweep", "Part B: efficientnet_lite0",
                    "Comparison", "Calibration", "Provenance"):
        assert heading in page, heading
    assert "inat-cnn sweep run" in page  # no sweep yet: the page says how to run one
    assert f"Chosen by validation accuracy: {compared['best_by_val_accuracy']} (" in page  # compare's choice, not re-made
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing to fetch
    assert page.count("<img ") == page.count('src="data:image/')
    calibration = page[page.index('<section id="calibration">'):]
    calibration = calibration[:calibration.index("</section>")]
    # each model's temperature is fitted on val, or (a tiny or saturated val split) says it is not
    assert calibration.count("<img ") == 2
    assert calibration.count("(fitted on the validation split)") + calibration.count("Temperature not fitted") == 2

    assert ran(run(["dvc", "repro"], repo).stdout) == []
    assert run(["dvc", "status"], repo).stdout.strip().startswith("Data and pipelines are up to date")
    leaderboard = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)[""]["data"]
    assert sorted(leaderboard) == [f"metrics/{stage}_{model}.json" for stage in ("evaluate", "train")
                                   for model in ("finetune", "scratch")]
    assert sum(len(file["data"]) for file in leaderboard.values()) == 14  # 7 numbers a model
    assert leaderboard["metrics/evaluate_finetune.json"]["data"]["finetune_test_acc"] == round(compared["models"][
        "efficientnet_lite0 (freeze_first_k)"]["test_accuracy"], 4)
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "Scratch accuracy (train vs val)" in html and "Fine-tune accuracy (train vs val)" in html and "confusion" in html.lower()
    assert "evaluate_finetune" in run(["dvc", "dag"], repo).stdout


def test_every_prepare_param_reaches_dvcs_run_cache(repo: Path):
    """DVC's run cache ignores params keys named size or nfiles (treeverse/dvc#10296): with such a key,
    a value cached before under another configuration came back with the other value's squares."""

    def repro(side: int, workers: int) -> list[str]:
        set_params(repo, {"prepare.side": side, "prepare.workers": workers})
        out = run(["dvc", "repro", "prepare"], repo).stdout
        for split in ("train", "val", "test"):
            meta = json.loads((repo / "data/prepared" / split / "meta.json").read_text())
            assert meta["side"] == side, (split, meta, out)
        assert json.loads((repo / "metrics/details/prepare.json").read_text())["workers"] == workers
        return ran(out)

    assert repro(240, 2) == ["prepare"]  # a new side
    assert repro(224, 1) == ["prepare"]  # 224 was cached before, with workers 2: a new configuration
    assert repro(240, 2) == []  # cached before with exactly these params: restored from the run cache


def test_a_rerun_of_training_writes_byte_identical_results(repo: Path):
    results = ["models/scratch.pt", "metrics/details/model_scratch.json", "metrics/details/train_scratch.json",
               "dvclive/train_scratch"]
    before = md5s(repo, results)
    timing = (repo / "metrics/details/timing_scratch.json").read_text()
    leaderboard = json.loads((repo / "metrics/train_scratch.json").read_text())
    out = run(["dvc", "repro", "-f", "-s", "train_scratch"], repo).stdout
    assert ran(out) == ["train_scratch"]
    assert md5s(repo, results) == before
    assert json.loads(timing).keys() == json.loads((repo / "metrics/details/timing_scratch.json").read_text()).keys()
    again = json.loads((repo / "metrics/train_scratch.json").read_text())
    assert {k: v for k, v in again.items() if k != "scratch_secs"} == {k: v for k, v in leaderboard.items() if k != "scratch_secs"}
    status = run(["dvc", "status"], repo).stdout
    assert "evaluate_scratch" not in status, status  # the checkpoint is the same file: nothing to re-evaluate


def test_a_sweep_report_reruns_only_the_report_which_then_shows_the_sweep(repo: Path):
    from test_sweep import METRIC, synthetic_sweep

    from inat_cnn.sweep.report import sweep_report

    result = sweep_report(synthetic_sweep(), METRIC, repo / "plots/sweep", repo / "reports/sweep.md")
    out = run(["dvc", "repro"], repo).stdout
    assert ran(out) == ["report"], out
    page = (repo / "reports/index.html").read_text()
    assert "inat-cnn sweep run" not in page  # the how-to line gave way to the sweep
    assert f"best configuration: {result['best']['name']}" in page
    assert "importance (fANOVA)" in page and "Parallel coordinates" in page
    top = max(result["importance"], key=lambda r: r["importance"])["param"]
    assert f"The most important parameter is {top}" in page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/chromium does it in CI)")


def test_the_report_opens_in_a_real_browser_with_every_image_and_no_request_out(reproduced: tuple[Path, str], tmp_path: Path):
    """Headless Chromium opens reports/index.html: every image decodes, nothing but the page's own
    file and its data: URIs is requested, nothing logs an error; the screenshot is kept in tmp_path."""
    browser = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
    page_url = (reproduced[0] / "reports/index.html").as_uri()
    requests, problems = [], []
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=browser, headless=True, viewport={"width": 1280, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            context.route("**/*", lambda route: route.continue_() if route.request.url == page_url else route.abort())
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto(page_url, wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            sections = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            page.screenshot(path=tmp_path / "report.png", full_page=True)
        finally:
            context.close()
    assert len(images) >= 15 and [alt for alt, loaded in images if not loaded] == []
    assert [u for u in requests if u != page_url and not u.startswith("data:")] == []
    assert problems == []
    assert len(sections) == 6 and sections[-1] == "Provenance", sections  # data, A, B, comparison, calibration, provenance
    assert (tmp_path / "report.png").stat().st_size > 100_000


def test_a_configuration_trained_before_is_restored_from_the_run_cache_not_trained_again(repo: Path):
    """DVC saves a stage to its run cache only when every out that is not a metric or plot is cached
    (a `cache: false` dvclive folder kept training out of it): a sweep's repeated configuration is free."""
    committed = md5s(repo, ["models/scratch.pt", "metrics/details/train_scratch.json", "dvclive/train_scratch"])
    set_params(repo, {"train.lr": 0.002})
    assert ran(run(["dvc", "repro", "train_scratch"], repo).stdout) == ["train_scratch"]
    run(["git", "checkout", "-q", "--", "params.yaml"], repo)
    out = run(["dvc", "repro", "train_scratch"], repo).stdout
    assert ran(out) == [] and "Stage 'train_scratch' is cached - skipping run, checking out outputs" in out, out
    assert md5s(repo, ["models/scratch.pt", "metrics/details/train_scratch.json", "dvclive/train_scratch"]) == committed
