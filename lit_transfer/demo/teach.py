"""Teach stage one's frozen features new classes from a few drawn examples, and the same network from scratch.

Both fits use the command line's pieces: ``TransferModule``, ``FreezeFeatures`` and a Lightning ``Trainer``. The
transferred model copies stage one's backbone (conv1, conv2) and freezes it; its head (fc1, fc2) starts fresh. The
model from scratch is the same network, fresh and trainable throughout. Both see every example in each step (one
full batch) for the same number of steps, from the same seed.

Held-out accuracy: on the test examples the user drew, else by cross-validation: each class's examples dealt into
``k`` folds (``k`` = the smallest class's count, at most ``FOLDS``); both models are refitted without each fold and
asked about it, so every example is predicted once by models that never saw it (with 3 per class: leave one out
of each class).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from lit_transfer.callbacks import run_callbacks
from lit_transfer.data.loader import EpochSampler, TensorBatches
from lit_transfer.freeze import FreezeFeatures
from lit_transfer.module import TransferModule

STEPS = 30  # full-batch steps per fit: enough for both models on 3 classes x 10 examples (benchmarks/RESULTS.md)
FOLDS = 3  # cross-validation folds at most: each costs two more fits
SEED = 0
MIN_EXAMPLES = 3  # per class
MAX_CLASSES = 10

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


class _AllEachStep(EpochSampler):
    """Every example in each batch, ``steps`` batches in one epoch. One epoch per step would cost Lightning's
    epoch hooks and a new iterator every step: 37 ms a step for the transferred fit, against 11 ms like this
    (the head on 30 cached features, this machine, loaded)."""

    def __init__(self, size: int, steps: int) -> None:
        super().__init__(size, size, shuffle=False, seed=SEED)
        self.steps = steps

    def rank_indices(self) -> Tensor:
        return torch.arange(self.size).repeat(self.steps)

    def __len__(self) -> int:
        return self.steps


class Examples(L.LightningDataModule):
    """The drawn examples as the data of one fit: all of them in every batch, ``steps`` batches in one epoch.

    ``dataset``, ``digits`` and ``class_names`` are what the checkpoint marker records, as for an image folder: the
    classes by name, no digits. So ``predict``, ``export`` and ``demo --target`` read the checkpoint as one of a
    folder stage two.
    """

    dataset = "folder"
    digits: list[int] = []

    def __init__(self, images: Tensor, labels: Tensor, class_names: list[str], steps: int = STEPS) -> None:
        super().__init__()
        self.images, self.labels, self.class_names, self.steps = images, labels, list(class_names), steps

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_dataloader(self) -> TensorBatches:
        # The project's own loader: the feature cache serves the frozen backbone's features through it.
        return TensorBatches(self.images, self.labels, _AllEachStep(len(self.images), self.steps))


class _Report(L.Callback):
    """Tells ``progress`` after every step (Lightning's own progress bars write to a terminal, not to a page)."""

    def __init__(self, progress: Progress, start: float, share: float, what: str) -> None:
        self.progress, self.start, self.share, self.what = progress, start, share, what

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        steps = trainer.num_training_batches
        done = trainer.global_step / steps
        self.progress(self.start + self.share * done, f"{self.what}: step {trainer.global_step}/{steps}")


def fit(
    data: Examples,
    source: str | os.PathLike | None,
    seed: int = SEED,
    callbacks: list[L.Callback] | None = None,
) -> L.Trainer:
    """One fit on ``data``: transferred from the stage-one checkpoint ``source`` (its backbone copied and frozen),
    or from scratch when ``source`` is None. Returns the trainer; ``trainer.lightning_module`` is the model."""
    L.seed_everything(seed, verbose=False)  # the process's RNG: reproducible when one fit runs at a time
    transfer = source is not None
    module = TransferModule(
        num_classes=data.num_classes,
        init_from=str(source) if transfer else None,
        transfer_layers=2 if transfer else None,  # the backbone only: the head is new, as the classes are
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,  # of data.steps steps
        # as every run: FreezeFeatures first, then the feature cache (the frozen backbone's features computed
        # once), the marker that makes the checkpoint one of ours and the NaN watch; then the page's own
        callbacks=[*run_callbacks([FreezeFeatures()] if transfer else []), *(callbacks or [])],
        logger=False,  # no run folder, no logs: the page shows what matters
        enable_checkpointing=False,  # the page saves the one checkpoint it offers (save_checkpoint)
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    module.eval().requires_grad_(False)
    return trainer


@torch.inference_mode()
def probabilities(module: TransferModule, images: Tensor) -> Tensor:
    """``(N, classes)`` probabilities for uint8 ``(N, 28, 28)`` images, as ``predict_step`` computes them."""
    return module(images).float().softmax(1)


@dataclass
class Taught:
    """Both models taught from one set of examples, and their held-out accuracy."""

    names: list[str]
    transferred: L.Trainer
    scratch: L.Trainer
    seconds: dict[str, float]  # each model's fit (no accuracy estimate)
    correct: dict[str, int] | None = None  # per model ("transferred", "scratch"): held-out examples right
    held_out: int = 0  # how many examples that accuracy counts
    estimate: str = ""  # how: "held-out examples" or "k-fold cross-validation"

    def save(self, path: str | os.PathLike) -> Path:
        """The transferred model as a lit_transfer checkpoint (with its class names) at ``path``."""
        self.transferred.save_checkpoint(path)
        return Path(path)


def teach(
    data: Examples,
    source: str | os.PathLike,
    seed: int = SEED,
    progress: Progress = lambda fraction, what: None,
    share: float = 1.0,
) -> Taught:
    """Fit both models on all the examples; ``progress`` goes from 0 to ``share``."""
    models, seconds = {}, {}
    for i, (key, what, src) in enumerate((("transferred", "Transferred", source), ("scratch", "From scratch", None))):
        start = time.perf_counter()
        models[key] = fit(data, src, seed, [_Report(progress, i * share / 2, share / 2, what)])
        seconds[key] = time.perf_counter() - start
    return Taught(data.class_names, models["transferred"], models["scratch"], seconds)


def folds(labels: Tensor) -> int:
    """How many cross-validation folds the examples allow (0 with fewer than 2 examples in some class)."""
    k = min(FOLDS, int(torch.bincount(labels).min()))
    return k if k >= 2 else 0


def held_out(
    taught: Taught,
    data: Examples,
    source: str | os.PathLike,
    test: tuple[Tensor, Tensor] | None = None,
    seed: int = SEED,
    progress: Progress = lambda fraction, what: None,
    start: float = 0.0,
) -> None:
    """Both models' accuracy on examples they did not see, into ``taught``: on ``test`` (images, labels) when
    given, else by cross-validation (see the module's docstring); ``progress`` goes from ``start`` to 1."""
    models = {"transferred": taught.transferred.lightning_module, "scratch": taught.scratch.lightning_module}
    if test is not None and len(test[0]):
        images, labels = test
        taught.correct = {k: int((probabilities(m, images).argmax(1) == labels).sum()) for k, m in models.items()}
        taught.held_out, taught.estimate = len(images), "held-out examples"
        return
    k = folds(data.labels)
    if not k:
        return
    # each class's examples dealt into the folds in turn: fold f holds those whose rank in their class is f mod k
    rank = torch.zeros_like(data.labels)
    for c in range(data.num_classes):
        where = (data.labels == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    correct = dict.fromkeys(models, 0)
    share = (1 - start) / (2 * k)
    for f in range(k):
        out = rank % k == f
        part = Examples(data.images[~out], data.labels[~out], data.class_names, data.steps)
        for j, (key, src) in enumerate((("transferred", source), ("scratch", None))):
            what = f"Held-out estimate, fold {f + 1} of {k}, {key}"
            report = _Report(progress, start + (2 * f + j) * share, share, what)
            module = fit(part, src, seed, [report]).lightning_module
            correct[key] += int((probabilities(module, data.images[out]).argmax(1) == data.labels[out]).sum())
    taught.correct, taught.held_out, taught.estimate = correct, len(data.images), f"{k}-fold cross-validation"
