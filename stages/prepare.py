"""prepare stage: data/split + data/raw + prepare params, data.max_image_pixels, data.max_aspect_ratio
-> data/prepared (decode-once uint8 cache), metrics/details/prepare.json."""

from inat_cnn.core.config import DataConfig, PrepareConfig, from_dict
from inat_cnn.core.files import write_json
from inat_cnn.core.outputs import PREPARED, RAW, SPLIT, details_path
from inat_cnn.core.stage_runner import run_stage


def main(params: dict) -> None:
    cfg = from_dict(PrepareConfig, params.get("prepare"), "prepare")
    data = from_dict(DataConfig, params.get("data"), "data")  # only the image limits are read
    # The library (torch, torchvision, ...) is imported only once the params are valid, so a bad
    # value fails at once instead of after seconds of imports.
    from inat_cnn.data.images import ImageLimits
    from inat_cnn.data.prepared import prepare_dataset

    report = prepare_dataset(
        SPLIT, RAW / "train", RAW / "test", PREPARED,
        side=cfg.side, workers=cfg.workers, limits=ImageLimits.of(data),
    )
    print(f"prepared {report['counts']} as {cfg.side}x{cfg.side} squares in {report['seconds']} s "
          f"({report['images_per_s']} images/s, {report['bytes'] / 2**20:.1f} MiB)")
    write_json(details_path("prepare"), report)


if __name__ == "__main__":
    run_stage(main)
