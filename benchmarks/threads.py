"""Several trainings on one machine: one OpenMP thread per core in each, or the cores split between them.

Runs ``--processes`` P copies (default: one per core, as ``pytest -n 2`` or ``dvc queue start -j 2`` on
a 2-core machine) of the same small CNN training at once, twice: with torch's default threads (one per
core in every process) and with ``inat_cnn.core.threads.split_cores(P)`` in their environment. Prints
the best of ``--rounds`` wall times of each (the two alternate, so neither gets the warm caches) and
the ratio. Run:  python benchmarks/threads.py [--processes P] [--steps N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from inat_cnn.core.threads import THREADS_ENV, split_cores, usable_cores

STEP = """
import time, torch, torch.nn as nn
torch.manual_seed(0)
blocks = [nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)) for c in (3, 16, 16)]
model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
opt = torch.optim.AdamW(model.parameters())
x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
for _ in range({steps}):
    opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
"""


def concurrent(processes: int, steps: int, env: dict[str, str]) -> float:
    """Wall seconds for ``processes`` copies of the training, started together."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", STEP.format(steps=steps)], env=env) for _ in range(processes)]
    if any(p.wait() for p in procs):
        sys.exit("a training process failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=usable_cores(), help="trainings at once (default: the cores)")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per training (default 150)")
    parser.add_argument("--rounds", type=int, default=2, help="times each variant runs; the best counts (default 2)")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    split = split_cores(args.processes, base)
    default_s = split_s = float("inf")
    for _ in range(args.rounds):
        default_s = min(default_s, concurrent(args.processes, args.steps, base))
        split_s = min(split_s, concurrent(args.processes, args.steps, {**base, **split}))
    print(f"{args.processes} trainings at once on {usable_cores()} cores, {args.steps} steps each")
    print(f"  torch's default threads (one per core each): {default_s:7.2f} s")
    print(f"  {THREADS_ENV}={split[THREADS_ENV]} each (split_cores):          {split_s:7.2f} s")
    print(f"  split / default: {split_s / default_s:.3f} (default / split: {default_s / split_s:.2f}x)")


if __name__ == "__main__":
    main()
