"""``predict`` writes ``predictions.csv``: for each test image its index in the test file (an image folder's: its
file), true and predicted class; with ``--data.predict_path``, for each image file its predicted class, probability
and the top three, or why it could not be read.

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

from lit_transfer.callbacks.marker import loaded_marker
from lit_transfer.checkpoint import class_names
from lit_transfer.errors import count
from lit_transfer.files import atomic_write, unused_path

COLUMNS = ("test_index", "digit", "predicted", "probability")
FILE_COLUMNS = ("file", "predicted", "probability", "second", "second_probability", "third", "third_probability")
FILE_COLUMNS += ("error",)  # why a file could not be read (its other columns empty)
SHOWN = 20  # files printed as a table; all of them are in the CSV

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
        self._report: str | None = None  # what to print once the progress bar is closed

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
        batches, self._batches = self._batches, []
        datamodule = trainer.datamodule
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        if getattr(datamodule, "predict_path", None) is not None:
            # the classes the checkpoint was trained on, whatever the config says (or the data's, without one)
            names = class_names(loaded_marker(trainer)) or datamodule.class_names
            self._report = write_file_predictions(trainer, batches, names, name)
            return
        if not batches:
            return
        rows = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        default = [str(i) for i in range(int(rows["label"].max()) + 1)]
        names = list(getattr(datamodule, "class_names", default))
        loader = trainer.predict_dataloaders
        n = len(rows["label"])
        # Which images this process predicted, in order (the loader does not shuffle; ``limit_predict_batches``
        # may stop it early): the positions its sampler drew, in the test file's numbering.
        sampler = getattr(loader, "sampler", None)  # a plain DataLoader's (trainer.predict(dataloaders=...)): in order
        positions = sampler.rank_indices()[:n] if hasattr(sampler, "rank_indices") else torch.arange(n)
        files = getattr(datamodule, "test_files", None)
        if files is not None:  # an image folder: the file, and the class names
            columns, index = ("file", "class", "predicted", "probability"), [files[i] for i in positions.tolist()]
        else:
            source = getattr(datamodule, "test_index", None)
            columns, index = COLUMNS, (source[positions] if source is not None else positions).tolist()
        labels, predicted = rows["label"].tolist(), rows["predicted"].tolist()
        table = [
            [i, names[t], names[p], f"{q:.6f}"]
            for i, t, p, q in zip(index, labels, predicted, rows["probability"].tolist(), strict=True)
        ]
        # ``trainer.log_dir`` broadcasts from rank 0 under DDP, so every rank asks for it.
        path = write_rows(Path(trainer.log_dir or trainer.default_root_dir) / name, columns, table)
        correct = sum(t == p for t, p in zip(labels, predicted, strict=True))
        self._report = f"predictions for {count(n, 'image')} ({100 * correct / n:.2f}% correct): {path}"

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Printed here rather than in on_predict_epoch_end, where the progress bar is still open: the table would
        # start on the bar's line.
        if stage == "predict" and self._report:
            print(self._report, flush=True)
            self._report = None


def write_file_predictions(trainer: L.Trainer, batches: list[dict[str, Tensor]], names: list[str], name: str) -> str:
    """predictions.csv for ``--data.predict_path``: per file its predicted class, probability and the top three, or
    why it could not be read. Returns the report to print: the first ``SHOWN`` files as a table."""
    datamodule = trainer.datamodule
    files, errors = datamodule.predict_files, datamodule.predict_errors
    readable = [i for i in range(len(files)) if i not in errors]  # the predict split's images, in order
    by_file = {}  # position in ``files`` -> row
    for batch in batches:
        for position, top, top_p in zip(
            batch["label"].tolist(), batch["top"].tolist(), batch["top_probability"].tolist(), strict=True
        ):
            ranked = [[names[c], f"{p:.6f}"] for c, p in zip(top, top_p, strict=True)]
            ranked += [["", ""]] * (3 - len(ranked))  # fewer than three classes
            by_file[readable[position]] = [files[readable[position]], *ranked[0], *ranked[1], *ranked[2], ""]
    if trainer.global_rank == 0:  # unreadable files are reported once
        by_file.update({i: [files[i], "", "", "", "", "", "", why] for i, why in errors.items()})
    table = [by_file[i] for i in sorted(by_file)]
    path = write_rows(Path(trainer.log_dir or trainer.default_root_dir) / name, FILE_COLUMNS, table)
    width = min(60, max((len(row[0]) for row in table[:SHOWN]), default=4))
    lines = [f"{'file':<{width}}  {'predicted':<12} {'probability':>11}  top 3"]
    for row in table[:SHOWN]:
        top3 = ", ".join(f"{row[k]} {float(row[k + 1]):.3f}" for k in (1, 3, 5) if row[k])
        shown = row[0] if len(row[0]) <= width else "..." + row[0][-width + 3 :]
        guess = (row[1], f"{float(row[2]):.4f}") if row[1] else ("-", "-")
        lines.append(f"{shown:<{width}}  {guess[0]:<12} {guess[1]:>11}  {top3 or 'unreadable: ' + row[7]}")
    if len(table) > SHOWN:
        lines.append(f"... and {len(table) - SHOWN} more in the CSV")
    unreadable = [row for row in table if row[7]]
    lines.append(f"predicted {count(len(table) - len(unreadable), 'file')}, {len(unreadable)} unreadable: {path}")
    lines += [f"unreadable: {row[0]}: {row[7]}" for row in unreadable[:SHOWN]]
    if len(unreadable) > SHOWN:
        lines.append(f"... and {count(len(unreadable) - SHOWN, 'more unreadable file')} (the CSV's error column)")
    return "\n".join(lines)


def write_rows(path: Path, columns: tuple[str, ...], rows: list[list]) -> Path:
    """Write the CSV atomically; never over an existing file (a second predict in one run keeps both).
    Returns where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows(rows)
    path = unused_path(path)
    atomic_write(path, text.getvalue())
    return path
