"""Dropout whose CPU mask costs a fifth of ``nn.Dropout``'s: the same distribution, drawn from random bytes.

Written by hand because no library has it: on the CPU, torch draws a dropout mask with one generator call per
element (``bernoulli_``), 6.7 ms for the backbone's 128 x 4,608 activations on this project's 2-core benchmark
machine, ~9% of a training step (benchmarks/RESULTS.md). Here each 64-bit draw gives eight uniform bytes, and an
element is kept when its byte is at or above ``256 * p``: for rates that are multiples of 1/256 (the notebook's
0.25 and 0.5) the keep probability is exactly ``1 - p``, as with ``nn.Dropout``; only the random stream differs.
On other devices (CUDA's fused dropout is already one kernel) this is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BYTE_LEVELS = 256


class ByteDropout(nn.Dropout):
    """``nn.Dropout`` (a subclass: same ``p``, no state, same checkpoint keys) with a cheaper CPU mask."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        threshold = p * BYTE_LEVELS
        if threshold != int(threshold):
            raise ValueError(f"ByteDropout draws p in steps of 1/{BYTE_LEVELS}: {p} is not one of them")
        self.threshold = int(threshold)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or not _dense(x):
            return F.dropout(x, self.p, self.training)
        # The float mask holds 0 or 1/(1-p): one multiply forward, one backward, as nn.Dropout does.
        keep = random_bytes_like(x).ge_(self.threshold).to(x.dtype).mul_(1 / (1 - self.p))
        return x * keep


def random_bytes_like(x: Tensor) -> Tensor:
    """Uniform random bytes in ``x``'s shape and memory layout (so one layout always gives the same mask)."""
    n = x.numel()
    # random_(-2**63, None) draws all 64 bits; a bare random_() on int64 leaves the top bit 0 (a biased byte).
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    return words.view(torch.uint8)[:n].as_strided(x.size(), x.stride())


def _dense(x: Tensor) -> bool:
    """True when ``x``'s elements fill its storage exactly once in some dimension order (as_strided is safe)."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
