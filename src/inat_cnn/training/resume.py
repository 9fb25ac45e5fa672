"""Resuming a killed training run: the loop's progress and the state saved after every epoch."""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.config import TrainConfig
from ..core.files import write_bytes
from ..models.checkpoint import ModelSpec


@dataclass
class Progress:
    """Everything the loop carries from one epoch to the next (saved for resume)."""

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_acc: float = -math.inf
    best_loss: float = math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    pruned_after_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, epoch: int, train: dict[str, float], val: dict[str, float], lr: float, patience: int) -> bool:
        """Add epoch ``epoch``'s row (train and val from ``Runner.train_epoch`` / ``Runner.evaluate``); True when val accuracy improved.

        After ``patience`` epochs in a row without improvement, ``stopped_early`` is set, and at once
        when val accuracy reaches 1: no later epoch can beat it, so no later epoch would be kept."""
        self.epoch = epoch
        self.history.append({
            "epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
            "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
            "epoch_seconds": train["seconds"] + val["seconds"], "train_seconds": train["seconds"],
            "train_images": train["images"], "images_per_s": train["images"] / train["seconds"],
        })
        if val["acc"] > self.best_acc:
            self.best_epoch, self.best_acc, self.best_loss = epoch, val["acc"], val["loss"]
            self.best_metrics = {"val_acc": val["acc"], "val_loss": val["loss"], "train_acc": train["acc"], "train_loss": train["loss"]}
            self.bad_epochs = 0
            self.stopped_early = val["acc"] >= 1.0
            return True
        self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience
        return False


class ResumeState:
    """The resume file: model, optimizer, scheduler, grad scaler and loop progress after each epoch.

    It lives outside DVC's outs (DVC deletes a stage's outs before running it), is written to a
    temp file and renamed, carries a fingerprint of everything the run depends on (a file from a
    differently-configured run is ignored), and is deleted once training finishes. A state
    without a path does nothing (a run that is not resumable, or a rank other than 0).
    """

    def __init__(self, path: Path | None, fingerprint: str = "") -> None:
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file is never trusted
            print(f"ignoring unreadable resume file {self.path} ({type(exc).__name__})", flush=True)
            return None
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            print(f"ignoring {self.path}: it belongs to a run with other params, code inputs or data", flush=True)
            return None
        return saved

    def save(self, progress: Progress, best_state: dict[str, torch.Tensor] | None, **states: Any) -> None:
        if self.path is None:
            return
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, "progress": progress.__dict__, "best_state": best_state, **states}, buffer)
        write_bytes(self.path, buffer.getvalue())

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def run_fingerprint(spec: ModelSpec, cfg: TrainConfig, seed: int, prepared_dir: Path) -> str:
    """What a resumed run must share with the interrupted one: model, params, seed and prepared data."""
    h = hashlib.sha256()
    h.update(json.dumps(
        {"arch": spec.arch, "model": spec.model_config, "classes": spec.class_names,
         "preprocessing": spec.preprocessing.to_dict(), "train": cfg.__dict__, "seed": seed},
        sort_keys=True, default=list,
    ).encode())
    for name in ("train", "val"):
        h.update((prepared_dir / name / "meta.json").read_bytes())
        h.update((prepared_dir / name / "items.csv").read_bytes())
        st = (prepared_dir / name / "images.npy").stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
