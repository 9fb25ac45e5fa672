"""compare stage: every named model's details and curves -> metrics/details/compare.json, reports/compare.md, plots/compare/.

    python stages/compare.py scratch finetune

A model is one name here (and its files in dvc.yaml's deps): see inat_cnn.core.outputs.ModelFiles.
"""

import argparse

from inat_cnn.core.files import write_json, write_text
from inat_cnn.core.outputs import COMPARE_MD, COMPARE_PLOTS, LEARNING_CURVES_PNG, PER_CLASS_PNG, ModelFiles, details_path
from inat_cnn.core.stage_runner import run_stage
from inat_cnn.evaluation.compare import comparison, markdown_report, model_summary
from inat_cnn.viz.compare import learning_curves, per_class_bars


def main(params: dict) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names (their details are metrics/details/*_<name>.json)")
    models = [model_summary(ModelFiles(name)) for name in parser.parse_args().models]
    write_json(details_path("compare"), comparison(models))
    write_text(COMPARE_MD, markdown_report(models))
    learning_curves({m.name: m.val_acc_curve for m in models}, COMPARE_PLOTS / LEARNING_CURVES_PNG)
    per_class_bars({m.name: m.per_class_accuracy for m in models}, COMPARE_PLOTS / PER_CLASS_PNG)
    for m in models:
        print(f"{m.name}: best val accuracy {m.best_val_acc:.3f}; test accuracy {m.test_accuracy:.3f}, macro-F1 {m.macro_f1:.3f}")


if __name__ == "__main__":
    run_stage(main)
