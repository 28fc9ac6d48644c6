"""``ProgressBar``: Lightning's TQDM bar with the running training loss (the mean of the last batches).

The epoch metrics (train_loss, val_loss, ...) are logged once per epoch (module.py); this adds what a user
watches during an epoch. The losses are added up on the device and read when the bar redraws (``refresh_rate``
batches), so no step waits for the device except those.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

WINDOW = 20  # batches in the running mean


class ProgressBar(TQDMProgressBar):
    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._losses: list[Any] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._losses = []
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._losses = [*self._losses[-(WINDOW - 1) :], loss.detach()]
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if self._losses and trainer.training:
            metrics["loss"] = f"{(sum(self._losses) / len(self._losses)).item():.4f}"
        return metrics
