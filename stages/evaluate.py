"""evaluate_<model> stage: models/<model>.pt on the prepared TEST split -> metrics, confusion data, figures.

    python stages/evaluate.py scratch     # evaluate_scratch
    python stages/evaluate.py finetune    # evaluate_finetune

Both evaluate stages run exactly this code and write the same layout:
metrics/evaluate_<model>.json, dvclive/evaluate_<model>/, plots/<model>/.
"""

import argparse
from pathlib import Path

from inat_cnn.core.config import EvaluateConfig, from_dict
from inat_cnn.core.errors import fields_named
from inat_cnn.core.files import write_json
from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model's name: its checkpoint is models/<model>.pt")
    name = parser.parse_args().model
    cfg = from_dict(EvaluateConfig, params.get("evaluate"), "evaluate")
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.evaluation.evaluate import evaluate_checkpoint

    with fields_named("params: evaluate."):
        metrics = evaluate_checkpoint(
            Path(f"models/{name}.pt"), Path("data/prepared"), cfg,
            plots_dir=Path(f"plots/{name}"), live_dir=Path(f"dvclive/evaluate_{name}"),
        )
    print(f"{name}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on {metrics['num_images']} images")
    write_json(f"metrics/evaluate_{name}.json", metrics)


if __name__ == "__main__":
    run_stage(main)
