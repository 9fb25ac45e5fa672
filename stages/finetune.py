"""finetune stage: finetune params, data/prepared/{train,val} -> models/finetune.pt, curves, metrics.

Trains only (evaluate_finetune evaluates). Writes its leaderboard row metrics/train_finetune.json, the
details metrics/details/{model,train,timing}_finetune.json (arch, weights, strategy, sizes; fit and val
calibration; wall time) and dvclive/train_finetune/ (curves). The model is the registry's "finetune"
entry (src/inat_cnn/models/registry.py).
"""

from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    from inat_cnn.sweep.pruning import epoch_hook_from_env  # inside a sweep: its pruner, else None
    from inat_cnn.training.stage import train_stage

    train_stage("finetune", params, __file__, make_hook=epoch_hook_from_env)


if __name__ == "__main__":
    run_stage(main)
