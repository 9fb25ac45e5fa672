"""The `inat-cnn` command: tools around the pipeline (the pipeline itself is `dvc repro`)."""

from __future__ import annotations

import argparse
import os
import sys

from importlib.metadata import version

from .core.errors import UserError, fields_named
from .core.outputs import LR_FIND_PLOTS, PREPARED
from .sweep.cli import add_sweep_commands

EXPORT_HELP = (
    "Export a checkpoint for deployment. The ONNX model takes float32 (N, 3, H, W) RGB in [0, 1] (the centre square "
    "resized to the checkpoint's input size), normalises it, and outputs calibrated logits and probabilities (divided "
    "by the checkpoint's temperature); its metadata holds class_names, input_size and temperature. "
    "Needs pip install -e '.[onnx]'."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inat-cnn", description=__doc__)
    parser.add_argument("--version", action="version", version=f"inat-cnn {version('inat-cnn')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    model_size = sub.add_parser("model-size", help="print the scratch CNN's per-layer table, params and FLOPs")
    model_size.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    model_size.add_argument("--num-classes", type=int, default=10)
    model_size.set_defaults(func=_model_size)
    predict = sub.add_parser(
        "predict", help="print a checkpoint's top-k classes for image files or folders",
        description="Classify images with a checkpoint (models/scratch.pt, models/finetune.pt), using the "
        "checkpoint's own preprocessing. A folder stands for every .jpg/.jpeg/.png file inside it, recursively.",
    )
    predict.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by train_scratch or finetune")
    predict.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files and/or folders of images")
    predict.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="print a JSON list of {path, top: [{class, probability}]}")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="(default: auto)")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                         help="average each image's probabilities with its mirror image's, as evaluate.tta does "
                         "(default: off, as evaluate.tta: it did not raise validation accuracy on flowers5)")
    predict.set_defaults(func=_predict)
    export = sub.add_parser("export", help="write a checkpoint as an ONNX model (needs the [onnx] extra)", description=EXPORT_HELP)
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by train_scratch or finetune")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="(default: onnx)")
    export.add_argument("--output", metavar="PATH", help="the file to write (default: the checkpoint's path with .onnx)")
    export.set_defaults(func=_export)
    lr_find = sub.add_parser(
        "lr-find", help="a learning-rate range test on the prepared train split: prints and plots a suggested lr",
        description="Train a fresh model of params.yaml's configuration for a few steps while the learning rate grows "
        "exponentially; suggest the rate a tenth of the way below the loss minimum. Reads data/prepared/train only "
        "(run `dvc repro prepare` first).",
    )
    lr_find.add_argument("model", choices=("scratch", "finetune"), help="scratch: model + train params; finetune: finetune params")
    lr_find.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    lr_find.add_argument("--steps", type=int, default=100, help="steps of the test, at most (default: 100)")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    lr_find.add_argument("--end", type=float, default=1.0, help="last learning rate (default: 1)")
    lr_find.add_argument("--out", help="the figure (default: plots/lr_find/MODEL.png); a .json beside it holds the curve")
    lr_find.set_defaults(func=_lr_find)
    add_sweep_commands(sub)
    return parser


def _model_size(args: argparse.Namespace) -> None:
    from .core.config import ScratchModelConfig, from_dict
    from .models.size import format_layer_table, size_report
    from .core.stage_runner import load_params

    cfg = from_dict(ScratchModelConfig, load_params(args.params).get("model"), "model")
    report = size_report(cfg, args.num_classes)
    print(format_layer_table(report["layers"]))


def _lr_find(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .core.files import write_json
    from .core.stage_runner import load_params, seed_param
    from .models.registry import model_entry

    params = load_params(args.params)
    seed = seed_param(params)
    entry = model_entry(args.model)
    arch, cfg = entry.configs(params)
    section = entry.train_section
    from .core.device import seed_everything
    from .data.prepared import open_prepared
    from .training.lr_find import lr_range_test
    from .viz.lr_find import lr_finding_plot

    train = open_prepared(PREPARED, "train")
    seed_everything(seed)
    with fields_named(f"params: {entry.sections[-1]}."):
        built = entry.build(arch, cfg, train.class_names, train.side)
    model, spec, groups = built.model, built.spec, built.param_groups
    with fields_named({"start": "--start", "steps": "--steps"}):
        finding = lr_range_test(model, spec, train, cfg, seed=seed, param_groups=groups, start=args.start, end=args.end, steps=args.steps)
    out = Path(args.out) if args.out else LR_FIND_PLOTS / f"{args.model}.png"
    lr_finding_plot(finding.lrs, finding.losses, finding.suggestion, out, f"lr range test: {spec.arch}, {len(finding.lrs)} steps")
    write_json(out.with_suffix(".json"), finding.to_dict())
    print(f"suggested {section}.lr: {finding.suggestion:.2g} (loss lowest at {10 * finding.suggestion:.2g}; "
          f"now {cfg.lr:g})  ->  dvc exp run -S {section}.lr={finding.suggestion:.2g}")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def _predict(args: argparse.Namespace) -> None:
    import json

    from .evaluation.predict import format_predictions, predict_images

    with fields_named({"top_k": "--top-k", "device": "--device"}):
        results = predict_images(args.checkpoint, args.inputs, args.top_k, device=args.device, tta=args.tta)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))


def _export(args: argparse.Namespace) -> None:
    from .export.onnx_export import export_checkpoint

    with fields_named({"format": "--format"}):
        out = export_checkpoint(args.checkpoint, args.output, fmt=args.format)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(0)
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `inat-cnn predict ... | head`: the reader stopped reading; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
