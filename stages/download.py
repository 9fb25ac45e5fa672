"""download stage: data params -> data/raw/{train,test}/<class>/*, metrics/details/download.json."""

from inat_cnn.core.config import DataConfig, from_dict
from inat_cnn.core.files import write_json
from inat_cnn.core.outputs import DOWNLOADS, RAW, details_path
from inat_cnn.core.stage_runner import run_stage, seed_param, workspace_root


def main(params: dict) -> None:
    cfg = from_dict(DataConfig, params.get("data"), "data")
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.data.raw import build_raw_dataset

    # a relative data.source is relative to the workspace, also in a queued or --temp experiment
    report = build_raw_dataset(cfg, seed_param(params), RAW, DOWNLOADS, workspace_root())
    print(report["test_folder_note"])
    write_json(details_path("download"), report)


if __name__ == "__main__":
    run_stage(main)
