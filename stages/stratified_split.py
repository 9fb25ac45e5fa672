"""stratified_split stage: data/raw/train + data.val_fraction, seed -> data/split/{train,val}.csv, metrics/details/split.json."""

from inat_cnn.core.config import DataConfig, from_dict
from inat_cnn.data.split import stratified_split, write_split
from inat_cnn.core.files import write_json
from inat_cnn.core.outputs import RAW, SPLIT, details_path
from inat_cnn.core.stage_runner import run_stage, seed_param


def main(params: dict) -> None:
    cfg = from_dict(DataConfig, params.get("data"), "data")
    result = stratified_split(RAW / "train", cfg.val_fraction, seed_param(params), RAW / "test")
    write_json(details_path("split"), write_split(result, SPLIT))


if __name__ == "__main__":
    run_stage(main)
