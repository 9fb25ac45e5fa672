"""Real photos for the benchmarks that train: the stages' own download (from a local folder), split
and prepare functions, run into a temporary folder. Imported by sweep_search.py, seed_spread.py and
throughput.py, which take their configs from params.yaml (:func:`params_config`: the library has no defaults)."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real_photos" / "flowers5"
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def params_config(cls: type, section: str, **changes: object):
    """``cls`` built from this checkout's params.yaml ``section`` with ``changes``."""
    import yaml

    from inat_cnn.core.config import from_dict

    return from_dict(cls, {**yaml.safe_load(PARAMS_FILE.read_text())[section], **changes}, section)


def photo_set(text: str) -> Path:
    """``--data``: a folder, or the name of a set beside the default one (``hymenoptera``: ../shared/real_photos/hymenoptera)."""
    path = Path(text)
    if not path.is_dir() and len(path.parts) == 1 and (DEFAULT_DATA.parent / text).is_dir():
        return DEFAULT_DATA.parent / text
    return path


def require(data: Path, script: str) -> None:
    """Stop with one line naming ``--data`` where the photos are missing."""
    if not data.is_dir():
        sys.exit(f"{script}: {data} is missing: this benchmark trains on real photos "
                 "(../shared/real_photos/flowers5 beside the checkout); point --data at photos in the iNaturalist "
                 "layout (<root>/train/<class>/*, <root>/val/<class>/*), or name a set of ../shared/real_photos")


def prepare_photos(data: Path, work: Path, *, seed: int, side: int, val_fraction: float = 0.2, workers: int = 2) -> Path:
    """``data`` through download (local folder), stratified_split and prepare into ``work``; the prepared root."""
    from inat_cnn.core.config import DataConfig
    from inat_cnn.data.prepared import prepare_dataset
    from inat_cnn.data.raw import build_raw_dataset
    from inat_cnn.data.split import stratified_split, write_split

    cfg = params_config(DataConfig, "data", source=str(data), val_fraction=val_fraction)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        build_raw_dataset(cfg, seed, work / "raw", work / "downloads")
        write_split(stratified_split(work / "raw/train", cfg.val_fraction, seed, work / "raw/test"), work / "split")
        prepare_dataset(work / "split", work / "raw/train", work / "raw/test", work / "prepared", side=side, workers=workers)
    return work / "prepared"
