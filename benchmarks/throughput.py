"""Input-pipeline and training throughput of inat-cnn versus the reference student pipeline.

One run measures, on the same generated full-size JPEGs (800x600, ~140 KB, ImageFolder layout),
with the same model, batch size and device, each figure after warm-up:

  (a) loader only, baseline: torchvision ImageFolder + PIL decode + Resize((224, 224)) + ToTensor
      + Normalize, DataLoader(num_workers=--workers, shuffle=True), batches copied to the device;
  (b) loader only, project: the prepared cache (the prepare stage's decode-once uint8 squares,
      built here from the same JPEGs) read by inat_cnn's BatchLoader: uint8 batches on the device;
  (b') the same plus the on-device BatchTransform (random resized crop, flip, colour jitter,
      normalisation): everything the model's input needs;
  (c) end-to-end training images/s of inat_cnn's training loop (Runner.train_epoch: forward,
      backward, optimizer step, per-epoch host sync) fed by (a) and by (b');
  (d) the compute ceiling: the same loop on one batch already on the device, on the fastest path
      the device offers (the precision the training loop picks with --amp auto: bf16 where the
      hardware computes it natively, fp16 on CUDA 7.x, else fp32; channels_last unless --no-channels-last);
  (e) the training step (as d) in bf16 autocast, forced even where the CPU only emulates bf16,
      against the same step in fp32.
(c, project) and (d), and the two of (e), are measured alternately for --rounds rounds; each ratio
is the median of the per-round ratios (a shared host's speed drifts within a run).

The default scratch CNN at 224 px, AdamW (torch.compile with --compile). Prints `loader ratio:
(b)/(a)`, `end-to-end vs ceiling: (c project)/(d)`, `bf16 vs fp32: (e)`, and peak RSS.
Run:  python benchmarks/throughput.py [--device cuda --batch-size 256]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inat_cnn.core.config import ScratchModelConfig, TrainConfig
from inat_cnn.data.batches import BatchLoader
from inat_cnn.data.prepared import open_prepared, prepare_dataset
from inat_cnn.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, BatchTransform
from inat_cnn.data.split import Row, csv_text
from inat_cnn.models.registry import model_entry
from inat_cnn.core.errors import UserError, fields_named
from inat_cnn.core.device import AMPS, DEVICES, choose_precision, select_device
from inat_cnn.training.loop import Runner
from inat_cnn.training.optim import make_optimizer, make_scheduler
from photos import params_config

IMAGE_W, IMAGE_H = 800, 600
JPEG_QUALITY = 90
NUM_CLASSES = 10
SEED = 0
CACHE_SIZE = 256  # prepare.side
CLASS_NAMES = [f"class_{c:02d}" for c in range(NUM_CLASSES)]


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


def _write_photo(job: tuple[Path, int]) -> int:
    """Write JPEG number ``i`` (its own seeded generator, so any worker makes the same file); return its size."""
    images, i = job
    buf = io.BytesIO()
    _photo_like(np.random.default_rng([SEED, i])).save(buf, "JPEG", quality=JPEG_QUALITY)
    (images / f"class_{i % NUM_CLASSES:02d}" / f"img_{i:05d}.jpg").write_bytes(buf.getvalue())
    return buf.tell()


def ensure_images(root: Path, n_images: int) -> tuple[Path, int, float]:
    """Generate (or reuse) ``n_images`` JPEGs over NUM_CLASSES class folders under ``root``/images."""
    images = root / "images"
    marker = root / "images.json"
    spec = {"n": n_images, "w": IMAGE_W, "h": IMAGE_H, "q": JPEG_QUALITY, "classes": NUM_CLASSES, "seed": SEED, "v": 2}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        files = sorted(images.rglob("*.jpg"))
        if len(files) == n_images:
            return images, 0, sum(f.stat().st_size for f in files) / len(files)
    start = time.perf_counter()
    if marker.exists():
        marker.unlink()
    for old in images.rglob("*.jpg") if images.is_dir() else []:
        old.unlink()
    for c in range(NUM_CLASSES):
        (images / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        total = sum(pool.map(_write_photo, [(images, i) for i in range(n_images)], chunksize=8))
    marker.write_text(json.dumps(spec))
    print(f"generated {n_images} JPEGs in {time.perf_counter() - start:.1f}s under {images}", flush=True)
    return images, n_images, total / n_images


# ---------------------------------------------------------------------------- loaders


def baseline_loader(images: Path, batch_size: int, workers: int, device: torch.device):
    """The reference student pipeline: ImageFolder + PIL + Resize((224,224)) + ToTensor + Normalize."""
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    ds = datasets.ImageFolder(str(images), transform=tf)
    generator = torch.Generator().manual_seed(SEED)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=generator, pin_memory=device.type == "cuda")
    while True:  # epoch after epoch, workers restarting each epoch as in training
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def prepare_cache(images: Path, out: Path) -> tuple[Path, dict]:
    """The prepare stage's cache of every JPEG (each split holds them all); returns its folder and report."""
    from torchvision import datasets

    samples = datasets.ImageFolder(str(images)).samples  # same files, same labels as the baseline
    rows = [Row(str(Path(p).relative_to(images)), label, f"class_{label:02d}") for p, label in samples]
    split = out / "split"
    split.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "val.csv"):
        (split / name).write_text(csv_text(rows))
    report = prepare_dataset(split, images, images, out / "prepared", side=CACHE_SIZE, workers=os.cpu_count() or 1)
    return out / "prepared", report


def default_cnn():
    """params.yaml's scratch CNN at 224 px and its spec, for ``CACHE_SIZE`` squares, built as the training
    stage builds it (models/registry.py)."""
    model = params_config(ScratchModelConfig, "model", input_size=224)
    return model_entry("scratch").build(model, params_config(TrainConfig, "train"), CLASS_NAMES, CACHE_SIZE)


def project_loader(prepared: Path, batch_size: int, device: torch.device, augment: bool):
    """inat_cnn's train path: BatchLoader over the memory-mapped cache (+ the on-device BatchTransform of the model's spec)."""
    transform = BatchTransform(default_cnn().spec.preprocessing, augment=True) if augment else None
    loader = BatchLoader(open_prepared(prepared, "train"), batch_size, device, transform, shuffle=True)
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def time_loader(batches, device: torch.device, warmup: int, measure: int) -> float:
    """Images/s of drawing ``measure`` batches (after ``warmup``), synchronised with the device."""
    for _ in range(warmup):
        next(batches)
    sync(device)
    seen, start = 0, time.perf_counter()
    for _ in range(measure):
        x, _y = next(batches)
        seen += x.shape[0]
    sync(device)
    return seen / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- training


class Trainer:
    """The default scratch CNN (:func:`default_cnn`), AdamW, cross-entropy, run by inat_cnn's training loop (Runner)."""

    def __init__(self, device: torch.device, args: argparse.Namespace, force_dtype: torch.dtype | None = None) -> None:
        """``force_dtype``: autocast to it whatever the device supports (None: the loop's own choice)."""
        torch.manual_seed(SEED)
        cfg = params_config(TrainConfig, "train", device=device.type, amp=args.amp, channels_last=not args.no_channels_last,
                            compile=args.compile)
        self.runner = Runner(default_cnn().model, cfg, device)
        if force_dtype is not None:
            self.runner.amp_dtype = None if force_dtype is torch.float32 else force_dtype
        self.optimizer = make_optimizer(cfg, self.runner.model.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer, steps_per_epoch=1000)
        self.loss_fn = nn.CrossEntropyLoss()

    def images_per_s(self, batches, warmup: int, measure: int) -> float:
        """Train on ``warmup`` batches, then time ``measure`` batches as one epoch of the real loop."""
        self.runner.train_epoch(itertools.islice(batches, warmup), self.loss_fn, self.optimizer, self.scheduler, desc="warm-up")
        result = self.runner.train_epoch(itertools.islice(batches, measure), self.loss_fn, self.optimizer, self.scheduler, desc="timed")
        return result["images"] / result["seconds"]


def repeat(batch):
    while True:
        yield batch


# ------------------------------------------------------------------------------- main


def pick_device(name: str) -> torch.device:
    """The training stages' own choice (core/device.py), its errors shown under ``--device``."""
    try:
        with fields_named({"device": "--device"}):
            return select_device(name)
    except UserError as exc:
        sys.exit(f"throughput.py: {exc}")


def peak_rss_mib() -> tuple[float, float]:
    """ru_maxrss (KiB on Linux) of this process and of its largest reaped child (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="number of 800x600 JPEGs (over 10 classes) (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch, every figure (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="the baseline DataLoader's num_workers (default: %(default)s)")
    p.add_argument("--warmup-batches", type=int, default=2, help="untimed batches before each figure's first measurement (default: %(default)s)")
    p.add_argument("--measure-batches", type=int, default=6, help="timed training steps per figure (c, d, e) (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating (c project) / (d), and bf16 / fp32 (e), measurements (default: %(default)s)")
    p.add_argument("--loader-batches", type=int, default=24, help="timed batches per loader-only figure (a, b, b') (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="as train.device: the training stages' select_device (default: %(default)s)")
    p.add_argument("--amp", choices=AMPS, default="auto",
                   help="precision as train.amp (auto: bf16 where native, fp16 on CUDA 7.x, else fp32) (default: %(default)s)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()) / "inat_cnn_throughput",
                   help="where the JPEGs are generated and cached between runs (default: %(default)s)")
    args = p.parse_args(argv)
    if min(args.images, args.batch_size, args.measure_batches, args.loader_batches, args.rounds) < 1 or args.workers < 0 or args.warmup_batches < 0:
        p.error("--images, --batch-size, --measure-batches, --loader-batches must be >= 1; --workers, --warmup-batches >= 0")

    t0 = time.perf_counter()
    device = pick_device(args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    images, generated, mean_bytes = ensure_images(args.out_dir, args.images)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"device {device} ({name}) | torch {torch.__version__} | {torch.get_num_threads()} intra-op threads | "
          f"{args.images} JPEGs {IMAGE_W}x{IMAGE_H} q{JPEG_QUALITY}, mean {mean_bytes / 1024:.0f} KiB "
          f"({'generated' if generated else 'cached'}) | batch {args.batch_size} | baseline workers {args.workers} | "
          f"{choose_precision(device, args.amp).describe()} | channels_last {not args.no_channels_last} | compile {args.compile} | "
          f"warm-up {args.warmup_batches} | measured loader/train batches {args.loader_batches}/{args.measure_batches}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="inat_cnn_cache_") as tmp:
        prepared, report = prepare_cache(images, Path(tmp))
        print(f"prepare (decode once, {CACHE_SIZE}px squares, {os.cpu_count()} threads): {report['images_per_s']:8.1f} img/s "
              f"(once per dataset)", flush=True)
        w, m, lm = args.warmup_batches, args.measure_batches, args.loader_batches
        r: dict[str, float] = {}
        r["a"] = time_loader(baseline_loader(images, args.batch_size, args.workers, device), device, w, lm)
        print(f"(a)  loader only, baseline (ImageFolder + PIL + Resize):         {r['a']:10.1f} img/s", flush=True)
        r["b"] = time_loader(project_loader(prepared, args.batch_size, device, augment=False), device, w, lm)
        print(f"(b)  loader only, project (prepared cache -> uint8 on device):   {r['b']:10.1f} img/s", flush=True)
        r["b_aug"] = time_loader(project_loader(prepared, args.batch_size, device, augment=True), device, w, lm)
        print(f"(b') project loader + on-device augmentation and normalisation: {r['b_aug']:10.1f} img/s", flush=True)
        r["c_base"] = Trainer(device, args).images_per_s(baseline_loader(images, args.batch_size, args.workers, device), w, m)
        print(f"(c)  end-to-end training, baseline loader:                       {r['c_base']:10.1f} img/s", flush=True)
        g = torch.Generator().manual_seed(SEED)
        batch = (torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device),
                 torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device))
        # (c, project) and (d) alternate, round after round, so that a host whose speed drifts
        # (a shared VM) slows both alike; their ratio is taken per round, then the median
        project, ceiling = Trainer(device, args), Trainer(device, args)
        project_batches = project_loader(prepared, args.batch_size, device, augment=True)
        rounds = []
        for k in range(args.rounds):
            c = project.images_per_s(project_batches, w if k == 0 else 0, m)
            d = ceiling.images_per_s(repeat(batch), w if k == 0 else 0, m)
            rounds.append((c, d))
            print(f"     round {k + 1}: (c) project path {c:10.1f} img/s | (d) ceiling {d:10.1f} img/s | ratio {c / d:.2f}", flush=True)
        r["c_proj"] = statistics.median(c for c, _ in rounds)
        r["d"] = statistics.median(d for _, d in rounds)
        r["c_vs_d"] = statistics.median(c / d for c, d in rounds)
        print(f"(c)  end-to-end training, project path (b'), median:             {r['c_proj']:10.1f} img/s", flush=True)
        print(f"(d)  compute ceiling (same loop, one batch on device), median:   {r['d']:10.1f} img/s", flush=True)
        bf16, fp32 = Trainer(device, args, torch.bfloat16), Trainer(device, args, torch.float32)
        steps = []
        for k in range(args.rounds):
            b16, f32 = bf16.images_per_s(repeat(batch), w if k == 0 else 0, m), fp32.images_per_s(repeat(batch), w if k == 0 else 0, m)
            steps.append((b16, f32))
            print(f"     round {k + 1}: (e) bf16 step {b16:10.1f} img/s | fp32 step {f32:10.1f} img/s | ratio {b16 / f32:.2f}", flush=True)
        r["bf16_vs_fp32"] = statistics.median(b / f for b, f in steps)

    own, children = peak_rss_mib()
    print(f"loader ratio: {r['b'] / r['a']:.2f}")
    print(f"loader+augment ratio: {r['b_aug'] / r['a']:.2f}")
    print(f"end-to-end vs ceiling: {r['c_vs_d']:.2f}   (median of {args.rounds} rounds)")
    print(f"bf16 vs fp32: {r['bf16_vs_fp32']:.2f}   (training step, median of {args.rounds} rounds; "
          f"{choose_precision(device, 'bf16').reason})")
    print(f"end-to-end vs baseline end-to-end: {r['c_proj'] / r['c_base']:.2f}")
    print(f"peak RSS: {own + children:.0f} MiB (self {own:.0f} MiB + largest child {children:.0f} MiB)")
    print(f"total runtime: {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
