"""The notebook's layers in the form ``lit_transfer/model.py`` writes them: the same values and gradients, faster on
the CPU.

``model.py`` uses these layers and orders its layers as below on every device (on CUDA, ``ByteDropout`` is torch's
own dropout and the flatten is a plain one). The weights and their checkpoint keys are the Keras model's. Measured
in benchmarks/RESULTS.md; each change is checked bit for bit against the Keras order in tests/test_model.py and
tests/test_layers.py. Written by hand because no library has them:

- The backbone pools before its second ReLU: a maximum commutes with ReLU exactly (both are monotone, and pooling
  picks the same element), and ReLU then runs, forward and backward, on a quarter of the elements.
- It flattens before its dropout (an elementwise mask commutes with a reshape): the mask is drawn over a plain
  (N, 4608) tensor whatever layout the convolutions use, and a frozen backbone's cached features are stored
  flattened, so images and cached features get the same mask without a layout conversion.
- The backbone's weights are channels-last (NHWC) when a run trains on the CPU (``TransferModule.setup``):
  oneDNN's CPU convolutions are faster on that layout.
- ``ByteDropout``: torch draws a CPU dropout mask with one generator call per element (``bernoulli_``). Here each
  64-bit draw gives eight uniform bytes, and an element is kept when its byte is at or above ``256 * p``: for rates
  that are multiples of 1/256 (the notebook's 0.25 and 0.5) the keep probability is exactly ``1 - p``, as with
  ``nn.Dropout``; only the random stream differs. Other rates, other dtypes and other devices (CUDA's fused dropout
  is already one kernel) take ``nn.Dropout``'s own path.
- ``GradLayoutFlatten``: flattening a channels-last tensor copies it into (N, C*H*W) order, and autograd hands
  the gradient back in plain NCHW layout. Every layer below then mixes layouts (pooling and ReLU backward with a
  channels-last input and an NCHW gradient take slow strided loops and copies). Its backward returns the
  gradient in the input's own layout, one copy instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BYTE_LEVELS = 256


class ByteDropout(nn.Dropout):
    """``nn.Dropout`` (a subclass: same ``p``, no state, same checkpoint keys) with a cheaper CPU mask."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)
        threshold = p * BYTE_LEVELS
        # A rate off the byte grid cannot be drawn exactly from bytes: such a layer is plain nn.Dropout.
        self.threshold = int(threshold) if threshold == int(threshold) else None

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # export --format torchscript: torch's own dropout (what evaluation runs)
            return F.dropout(x, self.p, self.training)
        # float32 only: a mask in a narrower float would round the 1/(1-p) scale before the multiply
        exact = self.threshold is not None and x.dtype == torch.float32 and _dense(x)
        if not self.training or self.p == 0 or x.device.type != "cpu" or not exact:
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


class GradLayoutFlatten(nn.Flatten):
    """``nn.Flatten`` whose gradient keeps a channels-last input's layout (any input, any ``start_dim``)."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and x.dim() == 4 and x.requires_grad and _channels_last(x):
            return _FlattenKeepingLayout.apply(x, self.start_dim, self.end_dim)
        return x.flatten(self.start_dim, self.end_dim)


class _FlattenKeepingLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, start_dim: int, end_dim: int) -> Tensor:
        ctx.shape = x.shape
        return x.flatten(start_dim, end_dim)  # a copy: channels-last memory is not in flattened order

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last), None, None


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
