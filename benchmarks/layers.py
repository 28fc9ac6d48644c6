"""Microbenchmark of lit_transfer/layers.py: one training step's forward + backward of the notebook's CNN on the
CPU, with torch's own dropout and flatten against the drop-in layers, interleaved so machine noise hits all alike.

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

from lit_transfer.cpu import tune_cpu
from lit_transfer.layers import ByteDropout, GradLayoutFlatten
from lit_transfer.model import Backbone, Head


def variant(dropout: type[nn.Module], flatten: type[nn.Module], flatten_first: bool) -> nn.Sequential:
    """The notebook's CNN with the backbone's last two layers and the head's dropout swapped in."""
    torch.manual_seed(0)
    backbone, head = Backbone(), Head(5)
    tail = [flatten(), dropout(0.25)] if flatten_first else [dropout(0.25), flatten()]
    backbone[5], backbone[6], head[2] = *tail, dropout(0.5)
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
        "GradLayoutFlatten, ByteDropout (lit_transfer)": variant(ByteDropout, GradLayoutFlatten, True),
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


if __name__ == "__main__":
    main()
