"""evaluate_scratch stage: models/scratch.pt on the prepared TEST split -> metrics, confusion plot, figures."""

from pathlib import Path

from inat_cnn.config import EvaluateConfig, from_dict
from inat_cnn.files import write_json
from inat_cnn.stage_runner import run_stage


def main(params: dict) -> None:
    cfg = from_dict(EvaluateConfig, params.get("evaluate"), "evaluate")
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        Path("models/scratch.pt"), Path("data/prepared"), cfg,
        plots_dir=Path("plots/scratch"), live_dir=Path("dvclive/evaluate_scratch"),
    )
    print(f"test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on {metrics['num_images']} images")
    write_json("metrics/evaluate_scratch.json", metrics)


if __name__ == "__main__":
    run_stage(main)
