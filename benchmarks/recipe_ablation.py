"""What each piece of the training recipe buys: the committed defaults, then one row per piece switched off.

Runs the real stage scripts (download, stratified_split, prepare once; then train_<model> and
evaluate_<model> per row) in a temporary copy of this repository's params.yaml, with only
``data.source`` changed, and prints a Markdown table per model:

  | row | best val acc | test acc | val Δ vs defaults | epochs run | train s |

The rows are chosen by what each stage's params say is on; every row must change something against
today's params.yaml:
each row's overrides are compared with it first, printed as ``key: today -> row``, and a row that
changes nothing stops the script before anything runs. Validation accuracy is what the defaults
were chosen by (the test set decides nothing), test accuracy is shown beside it. Also prints
`before the recipe` (224 px, 5 / 2 epochs, no warm-up, smoothing, average or mixing) for
comparison. One row is one full training run, so this takes a while on a CPU (flowers5: ~3 min per
scratch row, ~6 per fine-tuning row on 2 cores); ``--quick`` trains each row for one epoch (a
smoke run: the figures mean nothing).

Run:  python benchmarks/recipe_ablation.py --source ../shared/real_photos/flowers5 [--model scratch] [--rows "no warm-up,no label smoothing"]
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

# row -> the params it overrides (section.key -> value); "defaults" overrides nothing, every other row
# must change something against params.yaml (refused otherwise: see changes). Not rows, as params.yaml
# has them off: the scratch CNN's mixup/cutmix, fine-tuning's head-first epochs and backbone lr factor.
# Nor flip TTA (evaluate.tta): it changes no validation figure, only test accuracy, which decides nothing.
ROWS = {
    "scratch": {
        "defaults": {},
        "no warm-up": {"train.warmup_epochs": 0},
        "no label smoothing": {"train.label_smoothing": 0.0},
        "no weight average": {"train.ema_epochs": 0},
        "before the recipe": {"model.input_size": 224, "train.epochs": 5, "train.warmup_epochs": 0, "train.label_smoothing": 0.0,
                             "train.ema_epochs": 0, "train.mixup_alpha": 0.0, "train.cutmix_alpha": 0.0,
                             "train.weight_decay": 1.0e-4, "train.early_stop_patience": 5},
    },
    "finetune": {
        "defaults": {},
        "no warm-up": {"finetune.warmup_epochs": 0},
        "no label smoothing": {"finetune.label_smoothing": 0.0},
        "no weight average": {"finetune.ema_epochs": 0},
        "no mixup/cutmix": {"finetune.mixup_alpha": 0.0, "finetune.cutmix_alpha": 0.0},
        "before the recipe": {"finetune.strategy": "freeze_first_k", "finetune.trainable_blocks": 2, "finetune.epochs": 2,
                             "finetune.backbone_lr_factor": 1.0, "finetune.head_epochs": 0, "finetune.warmup_epochs": 0,
                             "finetune.label_smoothing": 0.0, "finetune.ema_epochs": 0, "finetune.mixup_alpha": 0.0,
                             "finetune.cutmix_alpha": 0.0, "finetune.early_stop_patience": 3},
    },
}


EPOCHS = {"scratch": "train.epochs", "finetune": "finetune.epochs"}  # set to 1 by --quick


def get_key(params: dict, key: str):
    """The value of a dotted key (KeyError where params.yaml has no such key)."""
    value = params
    for part in key.split("."):
        value = value[part]
    return value


def changes(base: dict, overrides: dict) -> dict[str, tuple]:
    """key -> (params.yaml's value, the row's) for each override that differs from ``base``: what the row changes."""
    found = {}
    for key, value in overrides.items():
        try:
            today = get_key(base, key)
        except KeyError:
            sys.exit(f"recipe_ablation.py: the override {key} is not a params.yaml key; fix ROWS")
        if today != value:
            found[key] = (today, value)
    return found


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
    parser.add_argument("--model", choices=("scratch", "finetune", "both"), default="both", help="whose rows (default: %(default)s)")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all); 'defaults' always runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: every row trains for 1 epoch (its figures mean nothing)")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    if not source.is_dir():
        sys.exit(f"recipe_ablation.py: --source {args.source}: no such folder")
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    models = ["scratch", "finetune"] if args.model == "both" else [args.model]
    wanted = None if not args.rows else {"defaults", *args.rows.split(",")}
    unknown = sorted((wanted or set()) - {row for model in models for row in ROWS[model]})
    if unknown:
        sys.exit(f"recipe_ablation.py: --rows: no row {', '.join(map(repr, unknown))} for {' / '.join(models)}; "
                 f"the rows: {'; '.join(dict.fromkeys(row for model in models for row in ROWS[model]))}")
    plan = {model: {row: changes(base, overrides) for row, overrides in ROWS[model].items() if wanted is None or row in wanted}
            for model in models}
    for model, rows in plan.items():  # before anything runs: a row equal to the defaults would measure nothing
        for row, changed in rows.items():
            if row != "defaults" and not changed:
                sys.exit(f"recipe_ablation.py: row {row!r} ({model}) changes nothing: params.yaml already has "
                         f"{ROWS[model][row]}; drop the row or make it change something")
    base["data"]["source"] = str(source)
    work = Path(tempfile.mkdtemp(prefix="recipe_ablation."))
    log = work / "log.txt"
    print(f"workspace {work} (stage output in {log})", flush=True)
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        for script in ("download.py", "stratified_split.py", "prepare.py"):
            run(script, cwd=work, log=log)
        for model, rows in plan.items():
            print(f"\n{model} on {source.name}{' (--quick: 1 epoch a row)' if args.quick else ''}; what each row changes "
                  "against params.yaml:", flush=True)
            for row, changed in rows.items():
                print(f"  {row}: {', '.join(f'{key} {old} -> {new}' for key, (old, new) in changed.items()) or 'nothing'}")
            print("\n| row | best val acc | test acc | val Δ vs defaults | epochs run | train s |\n|---|---:|---:|---:|---:|---:|", flush=True)
            reference = None
            for row in rows:
                params = copy.deepcopy(base)
                for key, value in ROWS[model][row].items():
                    set_key(params, key, value)
                if args.quick:
                    set_key(params, EPOCHS[model], 1)
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
