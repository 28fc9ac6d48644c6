"""Stage two's training step on the CPU, piece by piece: each part of the step as lit_transfer runs it outside
Lightning's loop (the head on cached features with the fast CPU layers, torchmetrics' updates, Adadelta with the
Keras values, batch 128), timed on its own with ``time.perf_counter``.

    python benchmarks/step_parts.py [--steps 400] [--warmup 100]

Prints the median milliseconds of each part and their sum, next to the step's GEMM floor at ``torch.mm``'s rate
on large matrices in the same process (``floor.py``). ``profile_step.py`` gives the step's shares by operator.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from floor import flop_per_image, gemm_peak
from profile_step import cpu_net
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_transfer.model import FEATURE_DIM
from lit_transfer.speed.cpu import tune_cpu

BATCH, CACHED = 128, 27536


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100)
    args = p.parse_args()
    tune_cpu()
    net = cpu_net()
    net.backbone.requires_grad_(False)
    net.train()
    cache, labels = torch.rand(CACHED, FEATURE_DIM), torch.randint(0, 5, (CACHED,))
    optimizer = torch.optim.Adadelta(net.head.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    accuracy = MulticlassAccuracy(5, average="micro", validate_args=False)
    mean_loss = MeanMetric(nan_strategy="disable")
    parts: dict[str, list[float]] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        parts.setdefault(name, []).append(now - since)
        return now

    for _ in range(args.warmup + args.steps):
        t = time.perf_counter()
        index = torch.randint(0, CACHED, (BATCH,))
        x, y = cache.index_select(0, index), labels.index_select(0, index)
        t = lap("gather the batch from the cache", t)
        x = net.backbone.from_features(x)
        t = lap("feature dropout (0.25)", t)
        logits = net.head(x)
        t = lap("head forward (fc1, ReLU, dropout, fc2)", t)
        loss = F.cross_entropy(logits, y)
        t = lap("cross entropy", t)
        accuracy.update(logits.detach().argmax(1), y)
        mean_loss.update(loss.detach().expand(BATCH))
        t = lap("torchmetrics updates", t)
        loss.backward()
        t = lap("backward", t)
        optimizer.step()
        t = lap("Adadelta step", t)
        optimizer.zero_grad()
        lap("zero_grad", t)
    rate, flop = gemm_peak(torch.float32), flop_per_image()["stage_two"] * BATCH
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per step, median of {args.steps}")
    total = 0.0
    for name, times in parts.items():
        ms = statistics.median(times[args.warmup :]) * 1e3
        total += ms
        print(f"  {name:40s} {ms:6.3f}")
    print(f"  {'sum':40s} {total:6.3f}")
    print(f"floor: {flop / 1e9:.2f} GFLOP at {rate / 1e9:.0f} GFLOP/s (floor.py) = {flop / rate * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
