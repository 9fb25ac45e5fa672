"""Input-pipeline and training throughput of inat-cnn versus the reference student pipeline.

One run measures, on the same synthetic full-size JPEGs (800x600, ~100-170 KB, ImageFolder
layout), with the same batch size and device:

  (a) loader only, baseline: torchvision ImageFolder + PIL decode + Resize((224, 224)) + ToTensor
      + Normalize, DataLoader(num_workers=--workers, shuffle=True);
  (b) loader only, project: inat_cnn ImageListDataset (torchvision.io decode) +
      train_transform(Preprocessing((224, 224)), augment=True) through inat_cnn's make_loader;
  (c) end-to-end training images/s with batches from (a) and from (b): the default ScratchCNN,
      AdamW, forward + backward + step (the step of inat_cnn.train._Runner);
  (d) the compute ceiling: the same model and step on a batch already in memory.

Every figure is taken after --warmup-batches batches (worker start-up, allocator warm-up).
Loaders are iterated epoch after epoch as training does (workers restart each epoch), so the
loader figures include the per-epoch worker start-up. Run:  python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inat_cnn.config import ScratchModelConfig, TrainConfig
from inat_cnn.data.loaders import IMAGENET_MEAN, IMAGENET_STD, ImageListDataset, Preprocessing, make_loader, train_transform
from inat_cnn.models.scratch import ScratchCNN
from inat_cnn.train import _Runner, make_optimizer

IMAGE_W, IMAGE_H = 800, 600
JPEG_QUALITY = 90
NUM_CLASSES = 10
SEED = 0


# ----------------------------------------------------------------------------- images


def _photo_like(rng: np.random.Generator):
    """An 800x600 RGB image with photo-like JPEG statistics: gradient, blobs, shapes, sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = IMAGE_W, IMAGE_H
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    t = (t - t.min()) / (t.max() - t.min())
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    low = rng.normal(0, 1, (h // 25 + 1, w // 25 + 1, 3))
    low = Image.fromarray((low * 40 + 128).clip(0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    img = img + np.asarray(low, np.float32) - 128
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(30, 300)), y0 + int(rng.integers(30, 250))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pil = pil.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.asarray(pil, np.float32) + rng.normal(0, rng.uniform(5, 10), (h, w, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def ensure_images(root: Path, n_images: int) -> tuple[Path, int, float]:
    """Generate (or reuse) ``n_images`` JPEGs over NUM_CLASSES class folders under ``root``/images."""
    images = root / "images"
    marker = root / "images.json"
    spec = {"n": n_images, "w": IMAGE_W, "h": IMAGE_H, "q": JPEG_QUALITY, "classes": NUM_CLASSES, "seed": SEED, "v": 1}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        files = sorted(images.rglob("*.jpg"))
        if len(files) == n_images:
            return images, 0, sum(f.stat().st_size for f in files) / len(files)
    start = time.perf_counter()
    if marker.exists():
        marker.unlink()
    for old in images.rglob("*.jpg") if images.is_dir() else []:
        old.unlink()
    rng = np.random.default_rng(SEED)
    total = 0
    for i in range(n_images):
        folder = images / f"class_{i % NUM_CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        _photo_like(rng).save(buf, "JPEG", quality=JPEG_QUALITY)
        (folder / f"img_{i:05d}.jpg").write_bytes(buf.getvalue())
        total += buf.tell()
    marker.write_text(json.dumps(spec))
    print(f"generated {n_images} JPEGs in {time.perf_counter() - start:.1f}s under {images}", flush=True)
    return images, n_images, total / n_images


# ---------------------------------------------------------------------------- loaders


def baseline_loader(images: Path, batch_size: int, workers: int, seed: int):
    """The reference student pipeline: ImageFolder + PIL + Resize((224,224)) + ToTensor + Normalize."""
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    ds = datasets.ImageFolder(str(images), transform=tf)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=generator)


def project_loader(images: Path, batch_size: int, workers: int, seed: int, pin_memory: bool):
    """inat_cnn's current train path: torchvision.io decode + v2 augmenting transform + make_loader."""
    from torchvision import datasets

    samples = datasets.ImageFolder(str(images)).samples  # same files, same labels as the baseline
    items = [(str(Path(p).relative_to(images)), label) for p, label in samples]
    ds = ImageListDataset(images, items, train_transform(Preprocessing((224, 224)), augment=True))
    return make_loader(ds, batch_size, shuffle=True, num_workers=workers, seed=seed, pin_memory=pin_memory)


def endless(loader):
    """Batches epoch after epoch (non-persistent workers restart each epoch, as in training)."""
    while True:
        yield from loader


def time_loader(loader, warmup: int, measure: int) -> float:
    """Images/s of iterating ``loader`` alone for ``measure`` batches after ``warmup`` batches."""
    it = endless(loader)
    for _ in range(warmup):
        next(it)
    seen, start = 0, time.perf_counter()
    for _ in range(measure):
        x, _y = next(it)
        seen += x.shape[0]
    elapsed = time.perf_counter() - start
    it.close()  # shuts the workers down
    return seen / elapsed


# --------------------------------------------------------------------------- training


class Trainer:
    """The default ScratchCNN + AdamW + cross-entropy, stepped like inat_cnn.train._Runner.epoch."""

    def __init__(self, device: torch.device) -> None:
        torch.manual_seed(SEED)
        cfg = TrainConfig(device=device.type)  # AdamW, lr 1e-3; on CUDA: bf16 autocast + channels_last
        self.runner = _Runner(ScratchCNN(ScratchModelConfig(), NUM_CLASSES), cfg, device)
        self.runner.model.train()
        self.optimizer = make_optimizer(cfg, self.runner.model.parameters())
        self.loss_fn = nn.CrossEntropyLoss()
        self.device = device

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = self.runner
        x, y = r.batch(x, y)
        with r.autocast():
            loss = self.loss_fn(r.forward(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        r.scaler.scale(loss).backward()
        r.scaler.step(self.optimizer)
        r.scaler.update()
        return loss.detach()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def time_training(batches, device: torch.device, warmup: int, measure: int) -> float:
    """Training images/s over ``measure`` steps after ``warmup`` steps; batches from an iterator."""
    trainer = Trainer(device)
    for _ in range(warmup):
        trainer.step(*next(batches))
    trainer.sync()
    seen, start = 0, time.perf_counter()
    for _ in range(measure):
        x, y = next(batches)
        trainer.step(x, y)
        seen += x.shape[0]
    trainer.sync()
    return seen / (time.perf_counter() - start)


def repeat(batch):
    while True:
        yield batch


# ------------------------------------------------------------------------------- main


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("throughput.py: --device cuda requested but torch.cuda.is_available() is False here; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def peak_rss_mib() -> tuple[float, float]:
    """ru_maxrss (KiB on Linux) of this process and of its largest reaped child (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="number of 800x600 JPEGs (over 10 classes)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers for both pipelines")
    p.add_argument("--warmup-batches", type=int, default=2)
    p.add_argument("--measure-batches", type=int, default=6, help="timed training steps per figure (c, d)")
    p.add_argument("--loader-batches", type=int, default=24, help="timed batches per loader-only figure (a, b)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()) / "inat_cnn_throughput",
                   help="where the JPEGs are generated and cached between runs")
    args = p.parse_args(argv)
    if min(args.images, args.batch_size, args.measure_batches, args.loader_batches) < 1 or args.workers < 0 or args.warmup_batches < 0:
        p.error("--images, --batch-size, --measure-batches, --loader-batches must be >= 1; --workers, --warmup-batches >= 0")

    t0 = time.perf_counter()
    device = pick_device(args.device)
    torch.manual_seed(SEED)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    images, generated, mean_bytes = ensure_images(args.out_dir, args.images)
    pin = device.type == "cuda"
    print(f"device {device} | torch {torch.__version__} | {torch.get_num_threads()} intra-op threads | "
          f"{os.cpu_count()} CPUs | {args.images} JPEGs {IMAGE_W}x{IMAGE_H} q{JPEG_QUALITY}, mean {mean_bytes / 1024:.0f} KiB "
          f"({'generated' if generated else 'cached'}) | batch {args.batch_size} | workers {args.workers} | "
          f"warm-up {args.warmup_batches} | measured loader/train batches {args.loader_batches}/{args.measure_batches}",
          flush=True)

    def mk_base():
        return baseline_loader(images, args.batch_size, args.workers, SEED)

    def mk_proj():
        return project_loader(images, args.batch_size, args.workers, SEED, pin)

    w, m, lm = args.warmup_batches, args.measure_batches, args.loader_batches
    results: dict[str, float] = {}
    results["a"] = time_loader(mk_base(), w, lm)
    print(f"(a) loader only, baseline (ImageFolder + PIL + Resize):        {results['a']:8.1f} img/s", flush=True)
    results["b"] = time_loader(mk_proj(), w, lm)
    print(f"(b) loader only, project (ImageListDataset + make_loader):     {results['b']:8.1f} img/s", flush=True)
    it = endless(mk_base())
    results["c_base"] = time_training(it, device, w, m)
    it.close()
    print(f"(c) end-to-end training, baseline loader:                       {results['c_base']:8.1f} img/s", flush=True)
    it = endless(mk_proj())
    results["c_proj"] = time_training(it, device, w, m)
    it.close()
    print(f"(c) end-to-end training, project loader:                        {results['c_proj']:8.1f} img/s", flush=True)
    g = torch.Generator().manual_seed(SEED)
    batch = (torch.randn(args.batch_size, 3, 224, 224, generator=g),
             torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g))
    if pin:
        batch = tuple(t.pin_memory() for t in batch)
    results["d"] = time_training(repeat(batch), device, w, m)
    print(f"(d) compute ceiling (same step, batch already in memory):       {results['d']:8.1f} img/s", flush=True)

    own, children = peak_rss_mib()
    print(f"loader ratio: {results['b'] / results['a']:.2f}")
    print(f"end-to-end vs ceiling: {results['c_proj'] / results['d']:.2f}")
    print(f"peak RSS: {own + children:.0f} MiB (self {own:.0f} MiB + largest child {children:.0f} MiB)")
    print(f"total runtime: {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
