"""How far a result moves with the training seed: each variant of one model trained on several seeds.

With 100 validation photos one photo is a point of accuracy, so one run cannot tell two
configurations, or two precisions, apart. This trains the committed ``params.yaml`` configuration
of ``--model`` (scratch: its ``model`` + ``train`` sections; finetune: ``finetune``) once per
``--seeds`` value (the training seed: weight init, batch order, augmentation, dropout, mixing; the
split stays ``params.yaml``'s) and per ``--variant NAME:key=value,...`` (overrides of those
sections, e.g. ``fp32:amp=none`` or ``k3:trainable_blocks=3,epochs=12``), on the real photos of
``--data``, with the project's own code: the stages' download, split and prepare functions once
into a temporary folder (``prepare.side`` from params.yaml), ``scratch_model`` / ``finetune_model``
+ ``param_groups``, ``training.loop.fit`` and the best checkpoint's predictions on the test split.

Prints one row per variant: the mean, spread and range over seeds of the best validation accuracy
(what a choice may read) and of the test accuracy (reported, never used to choose), epochs run and
seconds per run; ``--out`` also gets every run as JSON.

Run:  python benchmarks/seed_spread.py --model scratch --variant bf16:amp=bf16 --variant fp32:amp=none
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from photos import DEFAULT_DATA, photo_set, prepare_photos, require

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"scratch": ("model", "train"), "finetune": ("finetune",)}


def parse_variant(text: str, model: str) -> tuple[str, dict[str, dict]]:
    """``NAME:key=value,...`` -> (NAME, {section: {key: value}}); a bare key belongs to the training section."""
    name, _, body = text.partition(":")
    overrides: dict[str, dict] = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        section, dot, field = key.rpartition(".")
        section = section if dot else SECTIONS[model][-1]
        if not eq or section not in SECTIONS[model]:
            sys.exit(f"seed_spread.py: --variant {text!r}: expected NAME:key=value,... with keys of "
                     f"{' / '.join(SECTIONS[model])} (got {item!r})")
        overrides.setdefault(section, {})[field] = yaml.safe_load(value)
    return name or "defaults", overrides


def build(model: str, params: dict, class_names: list[str], side: int):
    """The model, its spec, its training config and its optimizer groups (None: every trainable parameter),
    through the registry the training stages use."""
    from inat_cnn.models.registry import model_entry

    entry = model_entry(model)
    arch, cfg = entry.configs(params)
    built = entry.build(arch, cfg, class_names, side)
    return built.model, built.spec, cfg, built.param_groups


def run(model: str, params: dict, prepared: Path, seed: int, checkpoint: Path) -> dict:
    """One training run; its best val accuracy and that checkpoint's test accuracy."""
    from inat_cnn.data.prepared import open_prepared_splits
    from inat_cnn.evaluation.metrics import classification_metrics
    from inat_cnn.evaluation.predictions import predict_logits
    from inat_cnn.core.device import seed_everything, select_device
    from inat_cnn.training.loop import fit

    train, val, test = open_prepared_splits(prepared, ("train", "val", "test"))
    seed_everything(seed)
    net, spec, cfg, groups = build(model, params, train.class_names, train.side)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = fit(net, spec, train, val, cfg, seed=seed, checkpoint_path=checkpoint, param_groups=groups)
    seconds = time.perf_counter() - start
    device = select_device(cfg.device)
    with contextlib.redirect_stderr(io.StringIO()):
        logits, labels = predict_logits(net, test, spec.preprocessing, batch_size=64, device=device)
    return {"seed": seed, "val_acc": result.best_val_acc, "test_acc": classification_metrics(labels, logits.argmax(1), test.class_names)["accuracy"],
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": round(seconds, 1),
            "device": str(device), "precision": result.precision.name}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SECTIONS), default="scratch", help="which model's params (default: %(default)s)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                        help="params overrides, one variant each (default: the committed params alone)")
    parser.add_argument("--seeds", default="42,43,44", help="training seeds, comma-separated (default: %(default)s)")
    parser.add_argument("--data", type=photo_set, default=DEFAULT_DATA,
                        help="real photos in the iNaturalist layout, or a set's name in ../shared/real_photos (hymenoptera) "
                             "(default: %(default)s)")
    parser.add_argument("--device", default=None, help="overrides the section's device (auto | cpu | cuda | mps)")
    parser.add_argument("--side", type=int, help="prepare.side of the cached squares (default: params.yaml's)")
    parser.add_argument("--out", type=Path, help="write every run here as JSON")
    args = parser.parse_args()
    require(args.data, "seed_spread.py")
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [parse_variant(v, args.model) for v in args.variant or [":"]]
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    print(f"{args.model} on {args.data.name}: seeds {seeds}; torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else f'{torch.get_num_threads()} CPU threads'}", flush=True)
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="seed_spread.") as tmp:
        start = time.perf_counter()
        prepared = prepare_photos(args.data.resolve(), Path(tmp), seed=base["seed"], side=args.side or base["prepare"]["side"],
                                  val_fraction=base["data"]["val_fraction"])
        print(f"prepared in {time.perf_counter() - start:.0f} s", flush=True)
        for name, overrides in variants:
            params = {s: {**base[s], **overrides.get(s, {})} for s in SECTIONS[args.model]}
            if args.device:
                params[SECTIONS[args.model][-1]]["device"] = args.device
            results = []
            for seed in seeds:
                r = run(args.model, params, prepared, seed, Path(tmp) / "best.pt")
                print(f"  {name} seed {seed}: val {r['val_acc']:.3f} test {r['test_acc']:.3f}, best epoch {r['best_epoch']} "
                      f"of {r['epochs_run']}, {r['seconds']:.0f} s ({r['device']}, {r['precision']})", flush=True)
                results.append(r)
            runs.append({"variant": name, "overrides": overrides, "runs": results})
            rows.append(f"| {name} | {spread([r['val_acc'] for r in results])} | {spread([r['test_acc'] for r in results])} "
                        f"| {statistics.mean(r['epochs_run'] for r in results):.1f} | {statistics.mean(r['seconds'] for r in results):.0f} |")
    print(f"\n| {args.model} variant | val acc: mean ± sd (min–max) | test acc (reported only) | epochs run | s/run |")
    print("|---|---|---|---:|---:|")
    print("\n".join(rows))
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "data": str(args.data), "torch": torch.__version__,
                                        "variants": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
