"""finetune stage: finetune params, data/prepared/{train,val} -> models/finetune.pt, curves, metrics.

Trains only (evaluate_finetune evaluates). Writes its leaderboard row metrics/train_finetune.json, the
details metrics/details/{model,train,timing}_finetune.json (arch, weights, strategy, sizes; fit and val
calibration; wall time) and dvclive/train_finetune/ (curves).
"""

from pathlib import Path

from inat_cnn.core.config import FinetuneConfig, LoggingConfig, from_dict
from inat_cnn.core.errors import fields_named
from inat_cnn.core.files import write_json
from inat_cnn.core.outputs import ModelFiles, write_training_results
from inat_cnn.core.stage_runner import run_stage, seed_param

PREPARED = Path("data/prepared")
FILES = ModelFiles("finetune")


def main(params: dict) -> None:
    cfg = from_dict(FinetuneConfig, params.get("finetune"), "finetune")
    logging = from_dict(LoggingConfig, params.get("logging"), "logging")
    seed = seed_param(params)
    from inat_cnn.training.distributed import relaunch

    relaunch(cfg.processes, __file__)  # processes > 1: this script again, under torchrun
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.data.prepared import read_meta
    from inat_cnn.models.pretrained.freezing import count_params, finetune_model, param_groups
    from inat_cnn.models.size import measured_flops
    from inat_cnn.core.device import seed_everything
    from inat_cnn.training.distributed import is_main_process
    from inat_cnn.sweep.pruning import epoch_hook_from_env
    from inat_cnn.training.loop import train_on_split

    meta = read_meta(PREPARED / "train")
    class_names = meta["class_names"]

    seed_everything(seed)
    with fields_named("params: finetune."):
        pm, spec = finetune_model(cfg, class_names, meta["side"])
    counts = count_params(pm.model)
    print(f"{cfg.arch} ({pm.weights}), {cfg.strategy}: {counts['trainable']:,} of {counts['total']:,} parameters train; "
          f"blocks: {', '.join(name for name, _ in pm.blocks)}", flush=True)
    main_process = is_main_process()  # under torchrun, rank 0 writes the outputs
    if main_process:
        write_json(FILES.details("model"), {
            "label": f"{cfg.arch} ({cfg.strategy})", "arch": cfg.arch, "weights": pm.weights, "strategy": cfg.strategy,
            "params": counts["total"], "trainable_params": counts["trainable"],
            "flops_per_image": measured_flops(pm.model, pm.input_size),
        })

    with fields_named("params: finetune."):
        result = train_on_split(
            pm.model, spec, cfg, seed=seed, prepared_dir=PREPARED,
            checkpoint_path=FILES.checkpoint, live_dir=FILES.train_live,
            param_groups=param_groups(pm, cfg.lr, cfg.backbone_lr_factor, cfg.head_epochs),
            logging=logging, run_config={"seed": seed, "finetune": params.get("finetune")},
            resume_path=FILES.resume, epoch_hook=epoch_hook_from_env(),
        )
    if main_process:
        from inat_cnn.evaluation.calibration import calibrate_checkpoint

        with fields_named("params: finetune."):
            calibration = calibrate_checkpoint(FILES.checkpoint, PREPARED, batch_size=cfg.batch_size, device=cfg.device)
        print(f"temperature fitted on val: {calibration.describe()}", flush=True)
        write_training_results(FILES, result.summary(), result.timing(), calibration.to_dict(), counts["total"])


if __name__ == "__main__":
    run_stage(main)
