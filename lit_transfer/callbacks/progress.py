"""``ProgressBar``: Lightning's TQDM bar with the running training loss (the mean of the last batches), and one line
per epoch where stdout is not a terminal.

The epoch metrics (train_loss, val_loss, ...) are logged once per epoch (module.py); this adds what a user
watches during an epoch. The losses are added up on the device and read when the bar redraws (``refresh_rate``
batches), so no step waits for the device except those.

A live bar redraws its line with carriage returns: in a terminal that is one line, in a file (``> log.txt``, CI, a
job scheduler) every redraw stays, about 300 kB per stage, and the next printout starts on the bar's line. So where
stdout is not a terminal the bars are off and each training epoch ends with one line instead (as Keras' ``verbose=2``
does; tqdm and Lightning have no such mode).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from lit_transfer.errors import count

WINDOW = 20  # batches in the running mean


class ProgressBar(TQDMProgressBar):
    def __init__(self, refresh_rate: int = 1, leave: bool = False, live: bool | None = None) -> None:
        """
        Args:
            refresh_rate: Redraw the live bar every this many batches.
            leave: Keep each epoch's finished bar on screen.
            live: Draw live bars (True) or print one line per training epoch (False); default: live bars when
                stdout is a terminal.
        """
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.live = live
        self._losses: list[Any] = []
        self._epoch_start = 0.0

    def _is_live(self) -> bool:
        return sys.stdout.isatty() if self.live is None else self.live

    @property
    def is_disabled(self) -> bool:
        # Every bar (sanity check, train, validation, test, predict) is created with ``disable=self.is_disabled``.
        return super().is_disabled or not self._is_live()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._losses = []
        self._epoch_start = time.monotonic()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._losses = [*self._losses[-(WINDOW - 1) :], loss.detach()]
        # Without a live bar there is nothing to redraw, but Lightning's hook would still gather every metric after
        # each batch (0.2 ms, 3% of a stage-two step on a 2-core CPU); the epoch's line gathers them once.
        if self._is_live():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.is_enabled and not self._is_live():
            self._print_epoch(trainer, pl_module)

    @rank_zero_only
    def _print_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch's one line: its number, batches, time and the bar's metrics (the validation ones included)."""
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        batches = trainer.num_training_batches
        seconds = time.monotonic() - self._epoch_start
        print(
            f"epoch {trainer.current_epoch + 1}{of}: {count(batches, 'batch', 'batches')}, {seconds:.1f} s  {shown}",
            flush=True,
        )

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if self._losses and trainer.training:
            metrics["loss"] = f"{(sum(self._losses) / len(self._losses)).item():.4f}"
        return metrics
