"""The floor under each stage on this machine, measured now: the FLOP a training step needs, at the GEMM rate
torch reaches here, in fp32 and (where the CPU computes bf16 natively) in bf16.

    python benchmarks/floor.py            # prints one JSON line; benchmarks/run.py runs it once per repeat

- FLOP per image: ``torch.utils.flop_counter`` over one forward and backward of the notebook's CNN
  (``lit_transfer.model``), batch 128. Stage one trains the whole network (no gradient for the images);
  stage two trains the head on cached features (the backbone is frozen and runs once, not per step).
  ``feature_pass``: that one forward of the frozen backbone, per image it caches (the training and validation
  images, once per run). Issue 25's stage-two floor counts the head's training only; run.py shows both.
- Peak: ``torch.mm`` of large square matrices on torch's threads (the process default), the median of several
  products at the better of two sizes: the rate a GEMM reaches on this machine now, not the datasheet's. (The
  step's own products as im2col GEMMs, K = 9 or 32 and N = 32, run at a fraction of it through ``torch.mm``:
  oneDNN's direct convolutions beat them, so they are no floor.)

Run in its own process (as run.py does) so that its threads do not compete with a training process.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lit_transfer.model import FEATURE_DIM, Backbone, Head
from lit_transfer.speed.cpu import native_bf16

BATCH = 128


def flop_per_image(num_classes: int = 5) -> dict[str, float]:
    """Forward + backward FLOP of one training image: the whole CNN (stage one), the head alone (stage two); and
    the frozen backbone's forward over one image, which stage two runs once per image it caches."""
    backbone, head = Backbone(), Head(num_classes)
    images, labels = torch.randn(BATCH, 1, 28, 28), torch.randint(0, num_classes, (BATCH,))
    out = {}
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(head(backbone(images)), labels).backward()
    out["stage_one"] = counter.get_total_flops() / BATCH
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(head(torch.randn(BATCH, FEATURE_DIM)), labels).backward()  # features: no gradient
    out["stage_two"] = counter.get_total_flops() / BATCH
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backbone.features(images)
    out["feature_pass"] = counter.get_total_flops() / BATCH
    return out


def mm_seconds(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """Median wall time of ``torch.mm`` of an (m, k) by a (k, n) matrix, after two untimed products."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 1536), repeats: int = 5) -> float:
    """FLOP/s of torch.mm on square matrices: the best size's median (a loaded machine lowers it, never raises it)."""
    return max(2 * s**3 / mm_seconds(s, s, s, dtype, repeats) for s in sizes)


def measure() -> dict:
    flop = flop_per_image()
    dtypes = {"32-true": torch.float32}
    if native_bf16():
        dtypes["bf16-mixed"] = torch.bfloat16
    return {"flop_per_image": flop, "gemm_peak_flops": {name: gemm_peak(dtype) for name, dtype in dtypes.items()}}


if __name__ == "__main__":
    torch.set_flush_denormal(True)
    print(json.dumps(measure()))
