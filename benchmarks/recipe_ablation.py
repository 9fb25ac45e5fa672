"""What each piece of the training recipe buys: the committed defaults, then one row per piece switched off.

Runs the real stage scripts (download, stratified_split, prepare once; then train_<model> and
evaluate_<model> per row) in a temporary copy of this repository's params.yaml, with only
``data.source`` changed, and prints a Markdown table per model:

  | row | best val acc | test acc | val Δ vs defaults | epochs run | train s |

The rows are chosen by what each stage's params say is on; validation accuracy is what the
defaults were chosen by (the test set decides nothing), test accuracy is shown beside it. Also
prints `today's defaults` (the recipe before it: 224 px, 5 / 2 epochs, no warm-up, smoothing,
average, mixing or TTA) for comparison. One row is one full training run, so this takes a while on
a CPU (flowers5: ~3 min per scratch row, ~6 per fine-tuning row on 2 cores).

Run:  python benchmarks/recipe_ablation.py --source ../shared/real_photos/flowers5 [--model scratch] [--rows ema,mixing]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from inat_cnn.core.outputs import ModelFiles

REPO = Path(__file__).resolve().parents[1]

# row -> the params it overrides (section.key -> value); "defaults" overrides nothing
ROWS = {
    "scratch": {
        "defaults": {},
        "no warm-up": {"train.warmup_epochs": 0},
        "no label smoothing": {"train.label_smoothing": 0.0},
        "no weight average": {"train.ema_epochs": 0},
        "no mixup/cutmix": {"train.mixup_alpha": 0.0, "train.cutmix_alpha": 0.0},
        "no flip TTA": {"evaluate.tta": False},
        "today's defaults": {"model.input_size": 224, "train.epochs": 5, "train.warmup_epochs": 0, "train.label_smoothing": 0.0,
                             "train.ema_epochs": 0, "train.mixup_alpha": 0.0, "train.cutmix_alpha": 0.0,
                             "train.weight_decay": 1.0e-4, "train.early_stop_patience": 5, "evaluate.tta": False},
    },
    "finetune": {
        "defaults": {},
        "no head-first epochs": {"finetune.head_epochs": 0},
        "backbone at the head's lr": {"finetune.backbone_lr_factor": 1.0},
        "no warm-up": {"finetune.warmup_epochs": 0},
        "no label smoothing": {"finetune.label_smoothing": 0.0},
        "no weight average": {"finetune.ema_epochs": 0},
        "no flip TTA": {"evaluate.tta": False},
        "today's defaults": {"finetune.strategy": "freeze_first_k", "finetune.trainable_blocks": 2, "finetune.epochs": 2,
                             "finetune.backbone_lr_factor": 1.0, "finetune.head_epochs": 0, "finetune.warmup_epochs": 0,
                             "finetune.label_smoothing": 0.0, "finetune.ema_epochs": 0, "finetune.early_stop_patience": 3,
                             "evaluate.tta": False},
    },
}


def set_key(params: dict, key: str, value) -> None:
    *path, last = key.split(".")
    section = params
    for part in path:
        section = section[part]
    section[last] = value


def run(script: str, *args: str, cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"recipe_ablation.py: {script} failed (exit {done.returncode}); see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="data.source: a folder in the iNaturalist layout (e.g. ../shared/real_photos/flowers5)")
    parser.add_argument("--model", choices=("scratch", "finetune", "both"), default="both")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all); 'defaults' always runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    if not source.is_dir():
        sys.exit(f"recipe_ablation.py: --source {args.source}: no such folder")
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["data"]["source"] = str(source)
    work = Path(tempfile.mkdtemp(prefix="recipe_ablation."))
    log = work / "log.txt"
    print(f"workspace {work} (stage output in {log})", flush=True)
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        for script in ("download.py", "stratified_split.py", "prepare.py"):
            run(script, cwd=work, log=log)
        models = ["scratch", "finetune"] if args.model == "both" else [args.model]
        wanted = None if not args.rows else {"defaults", *args.rows.split(",")}
        for model in models:
            print(f"\n{model} on {source.name}\n\n| row | best val acc | test acc | val Δ vs defaults | epochs run | train s |\n|---|---:|---:|---:|---:|---:|", flush=True)
            reference = None
            for row, overrides in ROWS[model].items():
                if wanted is not None and row not in wanted:
                    continue
                params = copy.deepcopy(base)
                for key, value in overrides.items():
                    set_key(params, key, value)
                (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                start = time.perf_counter()
                run(f"{'train_scratch' if model == 'scratch' else 'finetune'}.py", cwd=work, log=log)
                seconds = time.perf_counter() - start
                run("evaluate.py", model, cwd=work, log=log)
                files = ModelFiles(model, work)
                train = json.loads(files.details("train").read_text())
                test = json.loads(files.details("evaluate").read_text())
                val = train["best_val_acc"]
                reference = val if reference is None else reference
                print(f"| {row} | {val:.3f} | {test['accuracy']:.3f} | {val - reference:+.3f} | {train['epochs_run']} | {seconds:.0f} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
