"""The training split's epoch loss and accuracy, kept as device sums that are updated and zeroed in place.

Written by hand instead of torchmetrics' ``MeanMetric`` and ``MulticlassAccuracy`` (which validation and test
still use) because the whole-step CUDA graph (``step_graph.py``) updates them inside the graph: a graph keeps
writing to the tensors it captured, and torchmetrics' ``reset()`` replaces its state tensors with new ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class EpochSums:
    """Correct predictions, the loss summed per image, and the image count, on the training device."""

    def __init__(self) -> None:
        # [correct, loss * images, images] in float32 (counts are exact up to 2**24 images an epoch; MPS has no
        # float64), one tensor so that a process group sums them in one call
        self.sums: Tensor | None = None

    def to(self, device: torch.device) -> EpochSums:
        """Allocate the sums on ``device`` (fresh zeros if they were elsewhere); call before a graph captures
        ``update``, which must not allocate."""
        if self.sums is None or self.sums.device != device:
            self.sums = torch.zeros(3, device=device)
        return self

    def update(self, logits: Tensor, labels: Tensor, loss: Tensor) -> None:
        self.to(labels.device)  # allocates only the first time (or after a device change)
        n = labels.shape[0]
        # In place, and with n as a kernel argument rather than a new tensor (a host-to-device copy cannot be
        # captured). The loss is a per-image mean like Keras': the batch mean counted once per image.
        self.sums[0].add_((logits.argmax(1) == labels).sum())
        self.sums[1].add_(loss.detach().float(), alpha=n)
        self.sums[2].add_(n)

    def compute(self, reduce: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """(mean loss, accuracy) over the epoch; ``reduce`` sums across processes (Lightning's strategy.reduce)."""
        assert self.sums is not None, "no training step has updated the sums"
        correct, loss, images = reduce(self.sums.clone()).unbind()
        return loss / images, correct / images

    def reset(self) -> None:
        if self.sums is not None:
            self.sums.zero_()
