"""Stopping on a NaN or infinite training loss: the step it happened at, and the last good checkpoint kept."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor

from lit_transfer.errors import TrainingDiverged


def on_accelerator(loss: Tensor) -> bool:
    """Whether reading ``loss`` on the host would wait for the device (anything but the CPU)."""
    return loss.device.type != "cpu"


class LossWatch(L.Callback):
    """Checks every training loss, before its backward pass (the way ``EarlyStopping(check_finite=True)`` watches a
    metric from outside the module, but every step). On the CPU a check is free and happens at once; where reading
    the loss would wait for the device (``defer``), the first bad step is recorded on the device instead and read
    before each checkpoint and at each epoch end, so a checkpoint written after the loss went bad never replaces the
    last good one. The record is updated in place, with the step as a device scalar."""

    def __init__(self, defer: Callable[[Tensor], bool] = on_accelerator) -> None:
        """
        Args:
            defer: Whether checking a loss on the host would wait for its device (default: anything but the CPU).
        """
        self.defer = defer
        self.bad_step: Tensor | None = None  # first step with a non-finite loss (-1: none), on the device
        self.step_now: Tensor | None = None  # the current step, on the device

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.step_now is not None:
            self.step_now.fill_(trainer.global_step)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if not self.defer(loss):
            if not torch.isfinite(loss):
                diverged(trainer, trainer.global_step, loss.item())
            return
        if self.bad_step is None or self.bad_step.device != loss.device:
            self.bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.step_now = torch.full((), trainer.global_step, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step.copy_(torch.where(bad, self.step_now, self.bad_step))

    def check(self, trainer: L.Trainer) -> None:
        if self.bad_step is not None and (step := int(self.bad_step)) >= 0:
            diverged(trainer, step, float("nan"))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)  # raising here keeps the bad weights out of the checkpoint file


def diverged(trainer: L.Trainer, step: int, value: float) -> None:
    last = [cb.last_model_path for cb in trainer.checkpoint_callbacks if cb.last_model_path]
    kept = f"the last good checkpoint is {last[0]}" if last else "no checkpoint had been written yet"
    raise TrainingDiverged(
        f"the training loss became {value} at step {step} (epoch {trainer.current_epoch}); training stopped and "
        f"{kept}: lower the learning rate (--model.optimizer.lr) or check the data"
    )
