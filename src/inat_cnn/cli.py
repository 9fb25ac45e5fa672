"""The `inat-cnn` command: tools around the pipeline (the pipeline itself is `dvc repro`)."""

from __future__ import annotations

import argparse
import os
import sys

from importlib.metadata import version

from .core.errors import UserError, fields_named
from .sweep.cli import add_sweep_commands


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
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")
    predict.set_defaults(func=_predict)
    add_sweep_commands(sub)
    return parser


def _model_size(args: argparse.Namespace) -> None:
    from .core.config import ScratchModelConfig, from_dict
    from .models.size import format_layer_table, size_report
    from .core.stage_runner import load_params

    cfg = from_dict(ScratchModelConfig, load_params(args.params).get("model"), "model")
    report = size_report(cfg, args.num_classes)
    print(format_layer_table(report["layers"]))


def _predict(args: argparse.Namespace) -> None:
    import json

    from .evaluation.predict import format_predictions, predict_images

    with fields_named({"top_k": "--top-k", "device": "--device"}):
        results = predict_images(args.checkpoint, args.inputs, args.top_k, device=args.device)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))


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
