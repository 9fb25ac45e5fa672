"""train_scratch stage: model + train params, data/split -> models/scratch.pt, curves, metrics."""

from dataclasses import asdict
from pathlib import Path

from inat_cnn.config import LoggingConfig, ScratchModelConfig, TrainConfig, from_dict
from inat_cnn.files import write_json
from inat_cnn.stage_runner import run_stage, seed_param

SPLIT = Path("data/split")


def main(params: dict) -> None:
    model_cfg = from_dict(ScratchModelConfig, params.get("model"), "model")
    train_cfg = from_dict(TrainConfig, params.get("train"), "train")
    logging = from_dict(LoggingConfig, params.get("logging"), "logging")
    seed = seed_param(params)
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.checkpoint import SCRATCH_ARCH, ModelSpec
    from inat_cnn.data.loaders import Preprocessing
    from inat_cnn.data.split import read_split_csv
    from inat_cnn.models.scratch import ScratchCNN
    from inat_cnn.models.size import format_layer_table, size_report
    from inat_cnn.train import seed_everything, train_on_split

    class_names = read_split_csv(SPLIT / "train.csv").class_names()

    seed_everything(seed)
    model = ScratchCNN(model_cfg, num_classes=len(class_names))
    size = size_report(model_cfg, len(class_names))
    print(format_layer_table(size["layers"]), flush=True)
    write_json("metrics/model_scratch.json", size)

    spec = ModelSpec(SCRATCH_ARCH, asdict(model_cfg), class_names, Preprocessing(input_size=model_cfg.input_hw))
    result = train_on_split(
        model, spec, train_cfg, seed=seed, split_dir=SPLIT, images_dir=Path("data/raw/train"),
        checkpoint_path=Path("models/scratch.pt"), live_dir=Path("dvclive/train_scratch"),
        logging=logging, run_config={"seed": seed, "model": params.get("model"), "train": params.get("train")},
        resume_path=Path(".resume/train_scratch.pt"),
    )
    write_json("metrics/train_scratch.json", result.summary())


if __name__ == "__main__":
    run_stage(main)
