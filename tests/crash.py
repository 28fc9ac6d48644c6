"""Callbacks that crash a training process for real (SIGKILL), or make it fail or hang, for the resume and study
tests. Loaded via PYTHONPATH=tests."""

from __future__ import annotations

import os
import signal
import time

import lightning as L
import torch

from lit_transfer.callbacks.interrupt import Interrupt


def first_time(once: str | None, trainer: L.Trainer) -> bool:
    """True unless the marker file ``once`` exists; creates it (naming this run's folder) the first time, so that
    only the first attempt of any run that gets there acts, and a retried or continued one runs through."""
    if once is None:
        return True
    try:
        with open(once, "x") as f:
            f.write(str(trainer.default_root_dir))
        return True
    except FileExistsError:
        return False


class KillAt(L.Callback):
    """SIGKILL this process right after optimizer step ``step`` (before any checkpoint of that step is written);
    under DDP only the process of global rank ``rank``; only in runs whose folder contains ``match``; with
    ``once``, only the first time any run gets there (see ``first_time``)."""

    def __init__(self, step: int, rank: int = 0, match: str = "", once: str | None = None) -> None:
        self.step, self.rank, self.match, self.once = step, rank, match, once

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        here = trainer.global_step == self.step and trainer.global_rank == self.rank
        if here and self.match in str(trainer.default_root_dir) and first_time(self.once, trainer):
            os.kill(os.getpid(), signal.SIGKILL)


class HangAt(L.Callback):
    """Stop making progress before optimizer step ``step + 1`` until the process is signalled (Ctrl-C, SIGTERM: the
    run's ``Interrupt`` has a stop requested, and saves ``last.ckpt`` of step ``step + 1`` then) or killed, in runs
    whose folder contains ``match``, the first time any run gets there (``once``): a run caught mid-way for the
    interruption tests."""

    def __init__(self, step: int, once: str, match: str = "") -> None:
        self.step, self.once, self.match = step, once, match

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        here = trainer.global_step == self.step and self.match in str(trainer.default_root_dir)
        if here and first_time(self.once, trainer):
            while not any(cb.requested for cb in trainer.callbacks if isinstance(cb, Interrupt)):
                time.sleep(0.1)


class NanAt(L.Callback):
    """Make the training loss NaN from optimizer step ``step`` on, in runs whose folder contains ``match``: a real
    divergence, which the NaN watch stops with its error."""

    def __init__(self, step: int, match: str) -> None:
        self.step, self.match = step, match

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step == self.step and self.match in str(trainer.default_root_dir):
            with torch.no_grad():
                for p in pl_module.head.parameters():
                    p.fill_(float("nan"))


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
