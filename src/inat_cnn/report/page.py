"""``reports/index.html``: the context of every section, rendered by the Jinja2 template.

The page is one self-contained file: every figure is embedded as a ``data:`` URI, the style sheet
is inline, and it loads nothing, so it opens offline, mails as one attachment and prints.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import yaml

from ..core.config import ReportConfig, ScratchModelConfig
from ..core.outputs import COMPARE_PLOTS, PREPARED, SWEEP_PLOTS
from ..data.prepared import open_prepared
from ..evaluation.compare import model_summary, table_rows
from ..models.size import (
    CLOSED_FORM_SYMBOLS, FLOP_CONVENTION, FLOPS_FORMULA, PARAMS_FORMULA, closed_form_flops, closed_form_params,
)
from . import figures, observations
from .sources import (
    CALIBRATION_FIGURE, COMPARE_FIGURES, MODEL_FIGURES, SWEEP_FIGURES, ReportSources, compare_choice, data_counts,
    git_commit, lock_outputs, model_record, sweep_summary,
)

SWEEP_COMMAND = "inat-cnn sweep run sweeps/scratch.yaml --trials 8 --jobs 2 && dvc repro report"


PHOTO_PNG_BYTES = 150_000  # a PNG figure larger than this is mostly photographs: embedded as JPEG
JPEG_QUALITY = 85


def data_uri(png: bytes) -> str:
    """``png`` as a ``data:`` URI; a large one (photographs: prediction grids, feature maps)
    re-encoded as JPEG, which keeps the page a few MB instead of tens."""
    if len(png) > PHOTO_PNG_BYTES:
        from PIL import Image

        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        if buffer.tell() < len(png):
            return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figures(folder: Path, captions: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """The figures of ``folder`` that exist, embedded, with their captions."""
    return [{"caption": caption, "src": data_uri((folder / name).read_bytes()), "file": str(folder / name)}
            for name, caption in captions if (folder / name).is_file()]


def _closed_form(cfg: ScratchModelConfig, model: dict[str, Any]) -> dict[str, Any]:
    """The closed-form counts beside the exact ones (the forms hold when every block has one m and one k)."""
    facts = {"symbols": CLOSED_FORM_SYMBOLS, "params_formula": PARAMS_FORMULA, "flops_formula": FLOPS_FORMULA,
             "convention": FLOP_CONVENTION, "params": model["params"], "flops": model["flops_per_image"]}
    filters, kernels = set(cfg.filters_per_block()), set(cfg.kernel_per_block())
    if len(filters) == 1 and len(kernels) == 1 and model.get("input_size") == list(cfg.input_hw):
        (m,), (k,) = filters, kernels
        args = dict(m=m, k=k, n=cfg.dense_units, input_hw=cfg.input_hw, num_classes=model["num_classes"],
                    blocks=cfg.blocks, batch_norm=cfg.batch_norm)
        facts.update(closed_params=closed_form_params(**args), closed_flops=closed_form_flops(**args),
                     assignment=f"m = {m}, k = {k}, B = {cfg.blocks}, n = {cfg.dense_units}, c = {model['num_classes']}, "
                            f"H×W = {cfg.input_hw[0]}×{cfg.input_hw[1]}, β = {2 if cfg.batch_norm else 1}")
    return facts


def _model_section(sources: ReportSources, name: str, record: dict[str, Any], cfg: ScratchModelConfig) -> dict[str, Any]:
    model, test = record["model"], record["evaluate"]
    plots = sources.model_files(name).figures
    section = {
        "name": name, "label": model["label"], "model": model, "train": record["train"], "test": test,
        "per_class": [{"class": c, **row} for c, row in test["per_class"].items()],
        "curves": data_uri(figures.training_curves(record["curves"], model["label"])),
        "figures": _figures(plots, MODEL_FIGURES),
        "observations": observations.model_observations(record),
        "calibration": {
            "test": test.get("calibration"), "figures": _figures(plots, (CALIBRATION_FIGURE,)),
            "observations": observations.calibration_observations(test),
        },
    }
    if "layers" in model:  # the from-scratch CNN: its layer table and closed forms
        section["closed_form"] = _closed_form(cfg, model)
    return section


def report_context(
    sources: ReportSources, cfg: ReportConfig, scratch_model: ScratchModelConfig, params: dict[str, Any], lock_file: Path,
) -> dict[str, Any]:
    """Everything the template shows, from the files of ``sources`` (see :mod:`.sources`)."""
    counts = data_counts(sources)
    train = open_prepared(sources.path(PREPARED), "train")
    records = {name: model_record(sources, name) for name in sources.models}
    summaries = [model_summary(sources.model_files(name)) for name in sources.models]
    sweep = sweep_summary(sources)
    return {
        "data": {**counts, "samples": data_uri(figures.sample_images(train, cfg.samples_per_class)),
                 "observations": observations.data_observations(counts)},
        "models": [_model_section(sources, name, records[name], scratch_model) for name in sources.models],
        "sweep": sweep and {
            **sweep, "figures": _figures(sources.path(SWEEP_PLOTS), SWEEP_FIGURES),
            "observations": observations.sweep_observations(sweep),
        },
        "sweep_command": SWEEP_COMMAND,
        "comparison": {
            "models": [s.name for s in summaries],
            "rows": [{"label": label, "cells": cells} for label, cells in table_rows(summaries)],
            "figures": _figures(sources.path(COMPARE_PLOTS), COMPARE_FIGURES),
            "observations": observations.comparison_observations(records, compare_choice(sources)),
        },
        "provenance": {**git_commit(sources.root), "outputs": lock_outputs(lock_file),
                       "params": yaml.safe_dump(params, sort_keys=False, allow_unicode=True)},
    }


def render_report(context: dict[str, Any]) -> str:
    """The HTML page of ``context`` (see :func:`report_context`)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("inat_cnn.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: f"{100 * v:.1f} %"
    env.filters["thousands"] = lambda v: f"{v:,}"
    return env.get_template("report.html.j2").render(**context)
