"""Is the sweep smart? Epochs that TPE + pruning needs to find a configuration as good as the full grid's best.

1. The grid: every configuration of SPACE (48: learning rate x filter organisation x batch norm x
   dropout x augmentation) of the from-scratch CNN is trained once at a small scale (``--input``
   64 px, 12 epochs, the project's training recipe otherwise) on real photos (``--data``: flowers5;
   ``--data hymenoptera`` and ``--input 48`` give grids the default pruner was not chosen on), with the
   project's own code: the download, split and prepare functions of the stages, ``scratch_model``
   and the training loop's ``fit``. Each configuration's per-epoch validation accuracy is cached in
   benchmarks/.cache/sweep_search/ (git-ignored), keyed by everything that decides it, so a re-run
   only replays.
2. The replay: an Optuna study made by the sweep's own code (``open_study``, ``make_sampler``,
   ``make_pruner``, ``distributions``) asks for configurations; a trial "trains" by reporting its
   recorded curve epoch by epoch, exactly as the training stage's hook does, and stops when the
   pruner says so. Epochs are counted until a completed trial's best validation accuracy is within
   ``--within`` of the grid's best (a pruned trial is never ranked, as in ``sweep report``), or
   until the study has spent as many epochs as the grid (never reached). A configuration proposed
   again costs no epoch and repeats its first outcome: DVC's run cache restores it in a real sweep.

Prints, per strategy (TPE + successive halving, the sweep's default; TPE + Hyperband; TPE; random +
successive halving; random), the median epochs to the
target over ``--seeds`` sampler seeds, how many seeds never reached it, and the ratio to the grid's
epochs. Run:  python benchmarks/sweep_search.py   (--quick: a smoke run; --verify N: determinism)
      python benchmarks/sweep_search.py --data hymenoptera   (a second grid: another photo set)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from photos import DEFAULT_DATA, photo_set, prepare_photos, require

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache" / "sweep_search"
SEED = 42  # weight init, batch order, augmentation, split
INPUT = 64  # model.input_size: random crops of this side are cut from the prepared squares
SPACE = {
    "train.lr": [3.0e-4, 1.0e-3, 3.0e-3],
    "model.filter_organisation": ["same", "double"],
    "model.batch_norm": [True, False],
    "model.dropout": [0.1, 0.5],
    "train.augment": [True, False],
}
# what every configuration shares: params.yaml's recipe at a small scale (batch 32 and no weight average:
# 1.5x faster on a CPU), no early stopping (full curves)
BASE = {
    "model": {"blocks": 5, "filters": 16, "dense_units": 128, "input_size": INPUT},
    "train": {"epochs": 12, "batch_size": 32, "weight_decay": 0.05, "warmup_epochs": 2, "label_smoothing": 0.1,
              "ema_epochs": 0, "early_stop_patience": 1000, "device": "cpu"},
}
QUICK_SPACE = {"train.lr": [1.0e-3, 3.0e-3], "model.batch_norm": [True, False]}
STRATEGIES = (("TPE + pruning (halving)", "tpe", "halving"), ("TPE + Hyperband", "tpe", "hyperband"), ("TPE", "tpe", "none"),
              ("random + pruning (halving)", "random", "halving"), ("random", "random", "none"))


def grid(space: dict[str, list]) -> list[dict]:
    configs = [{}]
    for key, values in space.items():
        configs = [{**c, key: v} for c in configs for v in values]
    return configs


def side_of(input_size: int) -> int:
    """The prepared squares' side for ``input_size`` px crops: 72 for 64 (an eighth more)."""
    return input_size * 9 // 8


def params_of(config: dict, epochs: int, input_size: int = INPUT) -> dict[str, dict]:
    params = {section: dict(values) for section, values in BASE.items()}
    params["train"]["epochs"] = epochs
    params["model"]["input_size"] = input_size
    for key, value in config.items():
        section, name = key.split(".")
        params[section][name] = value
    return params


def cache_path(params: dict, data: Path) -> Path:
    side = side_of(params["model"]["input_size"])
    key = json.dumps({"params": params, "data": str(data), "side": side, "seed": SEED}, sort_keys=True)
    return CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def train(params: dict, prepared: Path, checkpoint: Path) -> dict:
    """One configuration through the real loop, on one CPU thread (``--jobs`` of them run at a
    time); its per-epoch validation curve."""
    from inat_cnn.core.device import seed_everything
    from inat_cnn.data.prepared import open_prepared_splits
    from inat_cnn.models.registry import model_entry
    from inat_cnn.training.loop import fit

    torch.set_num_threads(1)
    entry = model_entry("scratch")  # the train_scratch stage's model, through the same registry
    model_cfg, train_cfg = entry.configs(params)
    side = side_of(model_cfg.input_size)
    train_split, val_split = open_prepared_splits(prepared, ("train", "val"), side=side)
    seed_everything(SEED)
    built = entry.build(model_cfg, train_cfg, train_split.class_names, side)
    model, spec = built.model, built.spec
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # one line per configuration
        result = fit(model, spec, train_split, val_split, train_cfg, seed=SEED, checkpoint_path=checkpoint)
    return {"params": params, "val_acc": [row["val_acc"] for row in result.history],
            "val_loss": [row["val_loss"] for row in result.history],
            "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}


def label(config: dict) -> str:
    return " ".join(f"{key.split('.')[1]}={value}" for key, value in config.items())


def curves_for(configs: list[dict], epochs: int, data: Path, verify: int, jobs: int, input_size: int = INPUT) -> list[list[float]]:
    """Every configuration's curve: from the cache, trained (and cached) where missing; ``verify``
    cached ones trained again and compared."""
    paths = [cache_path(params_of(c, epochs, input_size), data) for c in configs]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    checks = [i for i in range(len(configs)) if i not in missing][:: max(1, len(configs) // max(verify, 1))][:verify]
    todo = missing + checks
    if todo:
        require(data, "sweep_search.py")
        CACHE.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="sweep_search.") as tmp:
            prepared = prepare_photos(data, Path(tmp), seed=SEED, side=side_of(input_size))
            print(f"training {len(missing)} configuration(s), verifying {len(checks)}, {epochs} epochs each, "
                  f"{jobs} at a time", flush=True)
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                runs = {pool.submit(train, params_of(configs[i], epochs, input_size), prepared, Path(tmp) / f"{i}.pt"): i for i in todo}
                for n, done in enumerate(as_completed(runs), 1):
                    i, run = runs[done], done.result()
                    if i in missing:
                        paths[i].write_text(json.dumps(run, indent=1) + "\n")
                        verdict = "cached"
                    else:
                        cached = json.loads(paths[i].read_text())
                        same = cached["val_acc"] == run["val_acc"] and cached["val_loss"] == run["val_loss"]
                        verdict = "identical to the cache" if same else f"DIFFERS from the cache: {cached['val_acc']} vs {run['val_acc']}"
                    print(f"  [{n}/{len(todo)}] {label(configs[i])}: best val acc {max(run['val_acc']):.3f} "
                          f"in {run['seconds']:.0f} s, {verdict}", flush=True)
                    if "DIFFERS" in verdict:
                        sys.exit(f"sweep_search.py: --verify: {paths[i]}: the re-trained curve differs from the cached one")
        print(f"grid training wall time: {time.perf_counter() - start:.0f} s", flush=True)
    return [json.loads(p.read_text())["val_acc"] for p in paths]


def replay(space: dict[str, list], curves: dict[str, list[float]], sampler: str, pruner: str, seed: int,
           target: float, budget: int) -> int | None:
    """Epochs a study spends until a completed trial reaches ``target`` (None: not within ``budget``).
    A configuration proposed again after a finished trial of it costs no epoch and repeats that
    trial's outcome: DVC's run cache restores the training stage (its metrics say complete, or
    pruned), and the trial reports no epoch, as in ``inat-cnn sweep run``."""
    from inat_cnn.sweep.pruning import quiet_optuna
    from inat_cnn.sweep.spec import Sweep
    from inat_cnn.sweep.space import config_of, distributions, make_sampler
    from inat_cnn.sweep.study import open_study

    optuna = quiet_optuna()
    sweep = Sweep(params=space)
    # a fixed name: Hyperband puts a trial in a bracket by hashing the study's name and trial number
    study = open_study(sweep, "sweep_search", None, sampler=make_sampler(sampler, sweep, seed), pruner=pruner)
    spent, ran = 0, {}  # configuration -> (state, value) of its first finished trial
    for _ in range(50 * len(curves)):  # a sampler that only proposes restored configurations gets nowhere
        if spent >= budget:
            break
        trial = study.ask(distributions(sweep))
        key = json.dumps(config_of(sweep, trial.params), sort_keys=True)
        if key in ran:
            study.tell(trial.number, ran[key][1], state=ran[key][0])
            continue
        curve, pruned = curves[key], False
        for epoch, acc in enumerate(curve, 1):
            spent += 1
            trial.report(acc, epoch)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            ran[key] = (optuna.trial.TrialState.PRUNED, None)
            study.tell(trial.number, state=ran[key][0])
            continue
        ran[key] = (optuna.trial.TrialState.COMPLETE, max(curve))
        study.tell(trial.number, max(curve))
        if max(curve) >= target:
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=photo_set, default=DEFAULT_DATA,
                        help="real photos in the iNaturalist layout, or a set's name in ../shared/real_photos (hymenoptera) "
                             "(default: %(default)s)")
    parser.add_argument("--input", type=int, default=INPUT, metavar="PX",
                        help="model.input_size of every configuration; the prepared squares are 9/8 of it (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=20, help="sampler seeds per strategy (default: %(default)s)")
    parser.add_argument("--within", type=float, default=0.01, help="the target: the grid's best val accuracy minus this (default: %(default)s)")
    parser.add_argument("--verify", type=int, default=0, metavar="N", help="train N cached configurations again and check their curves are identical")
    parser.add_argument("--jobs", type=int, default=2, help="configurations trained at a time, one CPU thread each (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 configurations x 2 epochs, 3 seeds")
    args = parser.parse_args()
    space, epochs = (QUICK_SPACE, 2) if args.quick else (SPACE, BASE["train"]["epochs"])
    seeds = 3 if args.quick else args.seeds
    data = args.data.resolve()
    configs = grid(space)
    if args.input < 32:
        parser.error("--input: at least 32 px (the CNN's 5 blocks halve it 5 times)")
    curves = curves_for(configs, epochs, data, args.verify, args.jobs, args.input)
    best = max(max(c) for c in curves)
    target = best - args.within - 1e-9
    grid_epochs = sum(len(c) for c in curves)
    hits = [label(c) for c, curve in zip(configs, curves) if max(curve) >= target]
    print(f"\ngrid: {len(configs)} configurations x {epochs} epochs = {grid_epochs} epochs on {data.name} at {args.input} px "
          f"({'quick' if args.quick else 'full'}); best val accuracy {best:.3f}; "
          f"{len(hits)} configuration(s) within {args.within:.2f}: {'; '.join(hits)}")
    by_config = {json.dumps(c, sort_keys=True): curve for c, curve in zip(configs, curves)}
    print(f"\n| strategy | median epochs to within {args.within:.2f} of the best | never reached (of {seeds} seeds) | vs the grid's {grid_epochs} |")
    print("|---|---:|---:|---:|")
    start = time.perf_counter()
    for name, sampler, pruner in STRATEGIES:
        spent = [replay(space, by_config, sampler, pruner, s, target, grid_epochs) for s in range(seeds)]
        median = statistics.median(math.inf if e is None else e for e in spent)
        shown = "never" if median == math.inf else f"{median:g}"
        ratio = "-" if median == math.inf else f"{median / grid_epochs:.3f} (1/{grid_epochs / median:.1f})"
        print(f"| {name} | {shown} | {sum(e is None for e in spent)} | {ratio} |", flush=True)
    print(f"\nreplay: {time.perf_counter() - start:.1f} s; goal: TPE + pruning <= 1/4 of the grid's epochs")


if __name__ == "__main__":
    main()
