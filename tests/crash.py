"""Callbacks that crash a training process for real (SIGKILL), for the resume tests. Loaded via PYTHONPATH=tests."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class KillAt(L.Callback):
    """SIGKILL this process right after optimizer step ``step`` (before any checkpoint of that step is written);
    under DDP only the process of global rank ``rank``."""

    def __init__(self, step: int, rank: int = 0) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(L.Callback):
    """SIGKILL this process halfway through writing the first checkpoint saved after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.global_step < self.step:
            return
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs) -> None:
            real_save(obj, f, *args, **kwargs)
            f.truncate(f.tell() // 2)  # a partly written file on disk ...
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # ... and the process gone

        torch.save = half_then_die


class SignalAt(L.Callback):
    """Send this process a real signal (SIGINT as Ctrl-C does, SIGTERM as a scheduler does) right after optimizer
    step ``step``, once."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
