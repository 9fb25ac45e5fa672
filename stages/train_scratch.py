"""train_scratch stage: model + train params, data/prepared/{train,val} -> models/scratch.pt, curves, metrics.

Writes its leaderboard row metrics/train_scratch.json, the details metrics/details/{model,train,timing}_scratch.json
(size and layers; fit and val calibration: the same bytes on a re-run; wall time) and dvclive/train_scratch/ (curves).
"""

from pathlib import Path

from inat_cnn.core.config import LoggingConfig, ScratchModelConfig, TrainConfig, from_dict
from inat_cnn.core.errors import fields_named
from inat_cnn.core.files import write_json
from inat_cnn.core.outputs import ModelFiles, write_training_results
from inat_cnn.core.stage_runner import run_stage, seed_param

PREPARED = Path("data/prepared")
FILES = ModelFiles("scratch")


def main(params: dict) -> None:
    model_cfg = from_dict(ScratchModelConfig, params.get("model"), "model")
    train_cfg = from_dict(TrainConfig, params.get("train"), "train")
    logging = from_dict(LoggingConfig, params.get("logging"), "logging")
    seed = seed_param(params)
    from inat_cnn.training.distributed import relaunch

    relaunch(train_cfg.processes, __file__)  # processes > 1: this script again, under torchrun
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.data.prepared import read_meta
    from inat_cnn.models.checkpoint import SCRATCH_ARCH
    from inat_cnn.models.scratch import scratch_model
    from inat_cnn.models.size import format_layer_table, size_report
    from inat_cnn.core.device import seed_everything
    from inat_cnn.training.distributed import is_main_process
    from inat_cnn.sweep.pruning import epoch_hook_from_env
    from inat_cnn.training.loop import train_on_split

    meta = read_meta(PREPARED / "train")
    class_names = meta["class_names"]

    seed_everything(seed)
    model, spec = scratch_model(model_cfg, class_names, meta["side"])
    size = size_report(model_cfg, len(class_names))
    main_process = is_main_process()  # under torchrun, rank 0 writes the outputs
    if main_process:
        print(format_layer_table(size["layers"]), flush=True)
        write_json(FILES.details("model"), {"label": "scratch CNN", "arch": SCRATCH_ARCH, **size})

    with fields_named("params: train."):
        result = train_on_split(
            model, spec, train_cfg, seed=seed, prepared_dir=PREPARED,
            checkpoint_path=FILES.checkpoint, live_dir=FILES.train_live,
            logging=logging, run_config={"seed": seed, "model": params.get("model"), "train": params.get("train")},
            resume_path=FILES.resume, epoch_hook=epoch_hook_from_env(),
        )
    if main_process:
        from inat_cnn.evaluation.calibration import calibrate_checkpoint

        with fields_named("params: train."):
            calibration = calibrate_checkpoint(FILES.checkpoint, PREPARED, batch_size=train_cfg.batch_size,
                                               device=train_cfg.device)
        print(f"temperature fitted on val: {calibration.describe()}", flush=True)
        write_training_results(FILES, result.summary(), result.timing(), calibration.to_dict(), size["params"])


if __name__ == "__main__":
    run_stage(main)
