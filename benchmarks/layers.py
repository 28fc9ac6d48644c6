"""Microbenchmark of lit_transfer/layers.py and the model's layer order: one training step's forward + backward of
the notebook's CNN on the CPU, with torch's own dropout and flatten against the drop-in layers, and the second ReLU
before or after pooling, interleaved so machine noise hits all alike.

    python benchmarks/layers.py [--steps 20] [--repeats 7]

Prints the median milliseconds per step of each variant (batch 128, channels-last backbone as lit_transfer runs it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.model import Backbone, Head
from lit_transfer.speed.cpu import tune_cpu
from lit_transfer.speed.layers import ByteDropout, GradLayoutFlatten


def variant(
    dropout: type[nn.Module], flatten: type[nn.Module], flatten_first: bool, pool_first: bool = False
) -> nn.Sequential:
    """The notebook's CNN with the backbone's last two layers and the head's dropout swapped in, and the second
    ReLU before pooling (the notebook) or after it (lit_transfer)."""
    torch.manual_seed(0)
    b, head = Backbone(), Head(5)
    middle = [b.pool, b.relu2] if pool_first else [b.relu2, b.pool]
    tail = [flatten(), dropout(0.25)] if flatten_first else [dropout(0.25), flatten()]
    backbone = nn.Sequential(b.conv1, b.relu1, b.conv2, *middle, *tail)
    head.dropout = dropout(0.5)
    return nn.Sequential(backbone.to(memory_format=torch.channels_last), head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tune_cpu()
    variants = {
        "nn.Dropout, nn.Flatten (torch, the notebook's order)": variant(nn.Dropout, nn.Flatten, False),
        "ByteDropout, nn.Flatten": variant(ByteDropout, nn.Flatten, False),
        "ByteDropout, GradLayoutFlatten": variant(ByteDropout, GradLayoutFlatten, False),
        "GradLayoutFlatten, ByteDropout": variant(ByteDropout, GradLayoutFlatten, True),
        "GradLayoutFlatten, ByteDropout, pooling before ReLU (lit_transfer)": variant(
            ByteDropout, GradLayoutFlatten, True, pool_first=True
        ),
    }
    images = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 5, (128,))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, model in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                F.cross_entropy(model(images), labels).backward()
                model.zero_grad()
            if repeat:
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; median of {args.repeats} x {args.steps} steps")
    for name, ms in times.items():
        print(f"{statistics.median(ms):7.2f} ms/step  {name}")
    print("the second ReLU and the pooling alone, forward + backward (a whole step's noise hides a 1 ms difference):")
    for name, ms in relu_and_pool(args.steps, args.repeats).items():
        print(f"{statistics.median(ms):7.2f} ms/step  {name}")


def relu_and_pool(steps: int, repeats: int) -> dict[str, list[float]]:
    conv2_out = torch.randn(128, 32, 24, 24).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(128, 32, 12, 12).contiguous(memory_format=torch.channels_last)
    orders = {
        "ReLU, then pooling (the notebook)": lambda x: F.max_pool2d(F.relu(x), 2),
        "pooling, then ReLU (lit_transfer)": lambda x: F.relu(F.max_pool2d(x, 2)),
    }
    times: dict[str, list[float]] = {name: [] for name in orders}
    for repeat in range(repeats + 1):
        for name, fn in orders.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn(conv2_out.detach().requires_grad_()).backward(grad)
            if repeat:
                times[name].append((time.perf_counter() - start) / steps * 1e3)
    return times


if __name__ == "__main__":
    main()
