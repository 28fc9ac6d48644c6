"""Batches drawn by index from tensors that already sit on the training device.

Written by hand because ``DataLoader`` + ``TensorDataset`` indexes and collates image by image (128 small copies
per batch plus a stack) and cannot keep the data on the GPU; here one batch is one ``index_select``. It is still
an ordinary iterable with ``__len__``, so Lightning's loops, limits, ``fast_dev_run`` and progress bar work as
usual. Lightning does not inject a ``DistributedSampler`` into non-``DataLoader`` iterables, so the rank sharding
is done here, the way ``DistributedSampler`` does it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class EpochSampler:
    """Index batches for one rank: a fresh permutation per epoch (seeded by ``seed`` and the epoch), or in order.

    Lightning calls ``set_epoch`` on ``loader.sampler`` at the start of every training epoch.
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_indices(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
            # Like DistributedSampler: pad by wrapping around so every rank takes the same number of steps
            # (DDP hangs otherwise). Only training shuffles; evaluation is never padded, so metrics stay exact.
            total = math.ceil(self.size / self.world_size) * self.world_size
            if total > self.size:
                order = torch.cat([order, order[: total - self.size]])
        else:
            order = torch.arange(self.size)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.shuffle:
            per_rank = math.ceil(self.size / self.world_size)
        else:
            per_rank = len(range(self.rank, self.size, self.world_size))
        return math.ceil(per_rank / self.batch_size)  # the short last batch is kept, as in the notebook


class TensorBatches:
    """Yields ``(inputs[idx], targets[idx])`` for each index batch of ``sampler``; resumable mid-epoch.

    ``inputs`` are the images, or per image anything else in the same order: the frozen backbone's cached features
    (``serve_features``, ``lit_transfer/callbacks/feature_cache.py``) until ``serve_images`` puts the images back.
    """

    def __init__(self, images: Tensor, targets: Tensor, sampler: EpochSampler) -> None:
        self.images, self.targets, self.sampler = images, targets, sampler
        self.inputs = images
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is ours
        self._yielded = 0  # batches handed out in the current epoch
        self._skip = 0  # batches to skip after a mid-epoch resume

    def __len__(self) -> int:
        return len(self.sampler)

    def serve_features(self, features: Tensor) -> None:
        """Serve ``features[i]`` in place of ``images[i]`` from the next batch on."""
        assert len(features) == len(self.images), "one feature row per image"
        self.inputs = features

    def serve_images(self) -> None:
        self.inputs = self.images

    @property
    def serves_features(self) -> bool:
        return self.inputs is not self.images

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: the permutation is drawn on the first ``next``, after Lightning has called ``set_epoch``.
        skip, self._skip = self._skip, 0
        self._yielded = skip
        indices = self.sampler.rank_indices().to(self.inputs.device)
        for batch in indices.split(self.sampler.batch_size)[skip:]:
            self._yielded += 1
            yield self.inputs.index_select(0, batch), self.targets.index_select(0, batch)

    # Lightning stores these in every checkpoint (``_Stateful`` loaders) and restores them before iterating.
    # It fetches ahead only from loaders without ``__len__``, so every batch handed out has been trained on.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches_done": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self._skip = state["batches_done"] if state["batches_done"] < len(self) else 0
