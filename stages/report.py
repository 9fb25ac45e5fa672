"""report stage: every stage's outputs -> reports/index.html, one self-contained page.

    python stages/report.py scratch finetune

Reads the whole params.yaml (the page shows it), the named models' details and figures, the
comparison, plots/sweep/ (what `inat-cnn sweep report` last wrote) and dvc.lock's hashes.
"""

import argparse
from pathlib import Path

from inat_cnn.core.config import ReportConfig, ScratchModelConfig, from_dict
from inat_cnn.core.files import write_text
from inat_cnn.core.outputs import REPORT_HTML
from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names (their files are metrics/details/*_<name>.json, plots/<name>/)")
    models = tuple(parser.parse_args().models)
    cfg = from_dict(ReportConfig, params.get("report"), "report")
    scratch = from_dict(ScratchModelConfig, params.get("model"), "model")
    from inat_cnn.report.page import render_report, report_context
    from inat_cnn.report.sources import ReportSources

    context = report_context(ReportSources(Path("."), models), cfg, scratch, params, Path("dvc.lock"))
    html = render_report(context)
    write_text(REPORT_HTML, html)
    print(f"{REPORT_HTML}: {len(html.encode()) / 1e6:.1f} MB, {html.count('<img ')} figures; open it in a browser")


if __name__ == "__main__":
    run_stage(main)
