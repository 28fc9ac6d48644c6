"""``predict`` writes ``predictions.csv``: for each test image its index in the test file, true and predicted digit.

Lightning's ``BasePredictionWriter`` is the hook for this; the rows are collected per batch (so it also works
where Lightning cannot return predictions, e.g. spawned processes) and written once at the end, atomically.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lit_transfer.files import atomic_write, unused_path

COLUMNS = ("test_index", "digit", "predicted", "probability")

# Lightning looks for a DataLoader's batch sampler to tell a writer which samples each batch held, and warns when
# there is none; this writer takes the positions from lit_transfer's own sampler instead.
warnings.filterwarnings(
    "ignore", message="Couldn't infer the batch indices fetched from your dataloader: `TensorBatches`"
)


class PredictionCSV(BasePredictionWriter):
    """One row per predicted image, into ``<run dir>/predictions.csv`` (``predictions-rank<r>.csv`` per process
    under DDP, each with that process's share of the images)."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self._batches: list[dict[str, Tensor]] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batches.append({k: v.detach().cpu() for k, v in prediction.items()})

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._batches:
            return
        rows = {k: torch.cat([b[k] for b in self._batches]) for k in self._batches[0]}
        self._batches = []
        datamodule = trainer.datamodule
        digits = torch.tensor(list(getattr(datamodule, "digits", range(int(rows["label"].max()) + 1))))
        loader = trainer.predict_dataloaders
        n = len(rows["label"])
        # Which images this process predicted, in order (the loader does not shuffle; ``limit_predict_batches``
        # may stop it early): the positions its sampler drew, in the test file's numbering.
        sampler = getattr(loader, "sampler", None)  # a plain DataLoader's (trainer.predict(dataloaders=...)): in order
        positions = sampler.rank_indices()[:n] if hasattr(sampler, "rank_indices") else torch.arange(n)
        source = getattr(datamodule, "test_index", None)
        index = source[positions] if source is not None else positions
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        # ``trainer.log_dir`` broadcasts from rank 0 under DDP, so every rank asks for it.
        path = Path(trainer.log_dir or trainer.default_root_dir) / name
        path = write_rows(path, index, digits[rows["label"]], digits[rows["predicted"]], rows["probability"])
        correct = int((rows["label"] == rows["predicted"]).sum())
        print(f"predictions for {n} images ({100 * correct / n:.2f}% correct): {path}")


def write_rows(path: Path, index: Tensor, digit: Tensor, predicted: Tensor, probability: Tensor) -> Path:
    """Write the CSV atomically; never over an existing file (a second predict in one run keeps both).
    Returns where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for row in zip(index.tolist(), digit.tolist(), predicted.tolist(), probability.tolist(), strict=True):
        writer.writerow([*row[:3], f"{row[3]:.6f}"])
    path = unused_path(path)
    atomic_write(path, text.getvalue(), newline="")
    return path
