"""finetune stage: finetune + evaluate params, data/split -> models/finetune.pt, curves, test metrics, figures."""

from pathlib import Path

from inat_cnn.config import EvaluateConfig, FinetuneConfig, LoggingConfig, from_dict
from inat_cnn.files import write_json
from inat_cnn.stage_runner import run_stage, seed_param

PREPARED = Path("data/prepared")
CHECKPOINT = Path("models/finetune.pt")


def main(params: dict) -> None:
    cfg = from_dict(FinetuneConfig, params.get("finetune"), "finetune")
    eval_cfg = from_dict(EvaluateConfig, params.get("evaluate"), "evaluate")
    logging = from_dict(LoggingConfig, params.get("logging"), "logging")
    seed = seed_param(params)
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.checkpoint import ModelSpec
    from inat_cnn.data.prepared import read_meta
    from inat_cnn.distributed import is_main_process
    from inat_cnn.evaluate import evaluate_checkpoint
    from inat_cnn.models.pretrained import apply_strategy, build_pretrained, count_params, param_groups
    from inat_cnn.models.size import measured_flops
    from inat_cnn.train import seed_everything, train_on_split

    meta = read_meta(PREPARED / "train")
    class_names = meta["class_names"]

    seed_everything(seed)
    pm = build_pretrained(cfg.arch, cfg.weights, len(class_names))
    apply_strategy(pm, cfg.strategy, cfg.trainable_blocks)
    counts = count_params(pm.model)
    flops = measured_flops(pm.model, pm.input_size)
    print(f"{cfg.arch} ({pm.weights}), {cfg.strategy}: {counts['trainable']:,} of {counts['total']:,} parameters train; "
          f"blocks: {', '.join(name for name, _ in pm.blocks)}", flush=True)

    spec = ModelSpec(cfg.arch, {"arch": cfg.arch}, class_names, pm.to_preprocessing(source_size=meta["size"]))
    result = train_on_split(
        pm.model, spec, cfg, seed=seed, prepared_dir=PREPARED,
        checkpoint_path=CHECKPOINT, live_dir=Path("dvclive/finetune"),
        param_groups=param_groups(pm, cfg.strategy, cfg.lr, cfg.backbone_lr_factor),
        logging=logging, run_config={"seed": seed, "finetune": params.get("finetune")},
        resume_path=Path(".resume/finetune.pt"),
    )
    if not is_main_process():  # under torchrun, rank 0 evaluates and writes the outputs
        return
    test = evaluate_checkpoint(
        CHECKPOINT, PREPARED, eval_cfg,
        plots_dir=Path("plots/finetune"), live_dir=Path("dvclive/finetune_evaluate"),
    )
    print(f"test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f} on {test['num_images']} images")
    write_json("metrics/finetune.json", {
        "arch": cfg.arch, "weights": pm.weights, "strategy": cfg.strategy,
        "params": counts["total"], "trainable_params": counts["trainable"], "flops_per_image": flops,
        "train": result.summary(), "test": test,
    })


if __name__ == "__main__":
    run_stage(main)
