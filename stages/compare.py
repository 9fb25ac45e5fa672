"""compare stage: both models' metrics and curves -> metrics/compare.json, reports/compare.md, plots/compare/."""

from pathlib import Path

from inat_cnn.compare import comparison, finetune_summary, markdown_report, scratch_summary
from inat_cnn.files import write_json, write_text
from inat_cnn.stage_runner import run_stage
from inat_cnn.viz.compare import learning_curves, per_class_bars

CURVE = "plots/metrics/val/acc.tsv"


def main(params: dict) -> None:
    models = [
        scratch_summary(Path("metrics/model_scratch.json"), Path("metrics/train_scratch.json"),
                        Path("metrics/evaluate_scratch.json"), Path("dvclive/train_scratch") / CURVE),
        finetune_summary(Path("metrics/finetune.json"), Path("dvclive/finetune") / CURVE),
    ]
    write_json("metrics/compare.json", comparison(models))
    write_text("reports/compare.md", markdown_report(models))
    learning_curves({m.name: m.val_acc_curve for m in models}, "plots/compare/learning_curves.png")
    per_class_bars({m.name: m.per_class_accuracy for m in models}, "plots/compare/per_class_accuracy.png")
    for m in models:
        print(f"{m.name}: test accuracy {m.test_accuracy:.3f}, macro-F1 {m.macro_f1:.3f}")


if __name__ == "__main__":
    run_stage(main)
