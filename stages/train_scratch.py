"""train_scratch stage: model + train params, data/prepared/{train,val} -> models/scratch.pt, curves, metrics.

Writes its leaderboard row metrics/train_scratch.json, the details metrics/details/{model,train,timing}_scratch.json
(size and layers; fit and val calibration: the same bytes on a re-run; wall time) and dvclive/train_scratch/ (curves).
The model is the registry's "scratch" entry (src/inat_cnn/models/registry.py).
"""

from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    from inat_cnn.sweep.pruning import epoch_hook_from_env  # inside a sweep: its pruner, else None
    from inat_cnn.training.stage import train_stage

    train_stage("scratch", params, __file__, make_hook=epoch_hook_from_env)


if __name__ == "__main__":
    run_stage(main)
