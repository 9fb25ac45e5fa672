"""evaluate_<model> stage: models/<model>.pt on the prepared TEST split -> metrics, confusion data, figures.

    python stages/evaluate.py scratch     # evaluate_scratch
    python stages/evaluate.py finetune    # evaluate_finetune

Both evaluate stages run exactly this code and write the same layout (inat_cnn.core.outputs.ModelFiles):
the leaderboard row metrics/evaluate_<model>.json, the details metrics/details/evaluate_<model>.json,
dvclive/evaluate_<model>/ (confusion data) and plots/<model>/ (figures).
"""

import argparse

from inat_cnn.core.config import EvaluateConfig, from_dict
from inat_cnn.core.errors import fields_named
from inat_cnn.core.outputs import PREPARED, ModelFiles, write_test_results
from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model's name: its checkpoint is models/<model>.pt")
    name = parser.parse_args().model
    cfg = from_dict(EvaluateConfig, params.get("evaluate"), "evaluate")
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.evaluation.evaluate import evaluate_checkpoint
    from inat_cnn.evaluation.figures import draw_test_figures

    files = ModelFiles(name)
    with fields_named("params: evaluate."):
        run = evaluate_checkpoint(files.checkpoint, PREPARED, cfg, live_dir=files.test_live)
        draw_test_figures(run, cfg, files.figures)
    metrics = run.metrics
    print(f"{name}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on {metrics['num_images']} images")
    write_test_results(files, metrics)


if __name__ == "__main__":
    run_stage(main)
