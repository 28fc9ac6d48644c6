"""``Interrupt``: Ctrl-C or SIGTERM (as a cluster scheduler sends it) stops training with a resumable checkpoint.

Lightning turns Ctrl-C into a shutdown wherever the signal lands (mid-step included) and exits without a
checkpoint of that moment. Here the signal only sets a flag; at the end of the batch in progress (a consistent
state: the step is done and counted) the callback writes ``last.ckpt`` as every ``--last_checkpoint`` save does,
writes out the logs and stops with ``Interrupted``, whose message is the command that resumes exactly (same final
weights as an uninterrupted run in deterministic mode: tests/test_lightning_conventions.py). A second Ctrl-C
stops at once. A signal the process was started with ignored (SIGINT in a shell script's background job) stays
ignored.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_transfer.errors import UserError


class Interrupted(UserError):
    """Training stopped on a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # as a shell reports a process ended by that signal


class Interrupt(L.Callback):
    """Installed by the command line for ``fit``; does nothing outside the main thread (signals need it)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, command: list[str] | None = None) -> None:
        """
        Args:
            command: The command line's arguments after ``python -m lit_transfer`` (for the resume command).
        """
        self.command = list(sys.argv[1:] if command is None else command)
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.requested = None
        for signum in self.SIGNALS:
            previous = signal.getsignal(signum)
            # An ignored signal stays ignored, as Python leaves an ignored SIGINT: a shell without job control starts
            # a background job so on purpose, for a Ctrl-C meant for its foreground command (lit_transfer/study/stop.py)
            if previous != signal.SIG_IGN:
                self._previous[signum] = previous
                signal.signal(signum, self._request)

    def _request(self, signum: int, frame: object) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.requested = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx) -> None:
        requested = self.requested is not None
        if trainer.world_size > 1:  # Ctrl-C may reach one process only (SIGTERM does): all stop together
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        signum = self.requested or signal.SIGTERM
        savers = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.save_last]
        last = savers[0] if savers else None
        if last is None:
            path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            trainer.save_checkpoint(path)
        else:
            last._save_last_checkpoint(trainer, last._monitor_candidates(trainer))
            path = Path(last.last_model_path)
        for logger in trainer.loggers:
            logger.save()
        name = signal.Signals(signum).name
        raise Interrupted(
            f"interrupted by {name} at step {trainer.global_step} (epoch {trainer.current_epoch}); saved {path}: "
            f"resume with: {resume_command(self.command, path)}",
            signum,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def resume_command(command: list[str], checkpoint: Path) -> str:
    """``command`` with ``--ckpt_path`` pointing at ``checkpoint`` (any earlier ``--ckpt_path`` replaced)."""
    args, skip = [], False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if not arg.startswith("--ckpt_path="):
            args.append(arg)
    return shlex.join(["python", "-m", "lit_transfer", *args, f"--ckpt_path={checkpoint}"])
