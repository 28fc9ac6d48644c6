"""Stage two's feature pass on the CPU: the frozen backbone over stage two's 27,536 training images, as
``lit_transfer/speed/feature_cache.py`` runs it, for several chunk sizes in turns (machine noise hits all alike).

    python benchmarks/feature_pass.py [--data_dir ../shared/data] [--chunks 256 128 64 32] [--repeats 7]

Every chunk size must give the same features to the bit as the first (checked): a convolution's result for one
image does not depend on how many images share its call. Prints the median seconds per pass and every repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import DATA_DIR
from profile_step import cpu_net
from torch import nn
from torchvision.datasets import MNIST

from lit_transfer.model import FEATURE_DIM, to_input
from lit_transfer.speed.cpu import tune_cpu

IMAGES = 27536  # stage two's training split (90% of the 30,596 training images of 0-4)


def feature_pass(net: nn.Module, images: torch.Tensor, chunk: int) -> tuple[float, torch.Tensor]:
    """Seconds for one pass over ``images`` in chunks of ``chunk``, filling one preallocated tensor (as the cache)."""
    with torch.no_grad():
        start = time.perf_counter()
        cache = torch.empty(len(images), FEATURE_DIM)
        for i in range(0, len(images), chunk):
            cache[i : i + chunk] = net.backbone.features(to_input(images[i : i + chunk]))
        return time.perf_counter() - start, cache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=DATA_DIR)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 128, 64, 32])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    tune_cpu()
    net = cpu_net().eval()  # lit_transfer's fast CPU layers, as it runs on the CPU
    mnist = MNIST(args.data_dir, train=True, download=False)
    images = mnist.data[mnist.targets < 5][:IMAGES]
    seconds: dict[int, list[float]] = {chunk: [] for chunk in args.chunks}
    first = None
    for _ in range(args.repeats):
        for chunk in args.chunks:
            t, cache = feature_pass(net, images, chunk)
            seconds[chunk].append(t)
            if first is None:
                first = cache
            elif not torch.equal(first, cache):
                raise SystemExit(f"chunks of {chunk} gave other features than chunks of {args.chunks[0]}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(images):,} images, same features")
    for chunk, ts in seconds.items():
        print(f"  chunk {chunk:4d}: median {statistics.median(ts):.2f} s   ({', '.join(f'{t:.2f}' for t in ts)})")


if __name__ == "__main__":
    main()
