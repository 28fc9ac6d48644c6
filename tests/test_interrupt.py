"""``Interrupt`` in a plain Lightning ``Trainer`` (quick): where it saves with and without a ``last.ckpt`` saver,
the signal it names, the resume command, the logs written out. The CLI's own runs: test_lightning_conventions.py.

The callback works with any LightningModule, so these tests train Lightning's own ``BoringModel``: no data to
read, and mutmut can run them (TransferModule's ``save_hyperparameters`` cannot read its arguments through
mutmut's trampoline outside LightningCLI)."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from crash import SignalAt
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from lit_transfer.callbacks.interrupt import Interrupt, Interrupted


class LoggingModel(BoringModel):
    """Lightning's test model (64 random vectors, one per batch), logging its loss at every step."""

    def training_step(self, batch, batch_idx):
        output = super().training_step(batch, batch_idx)
        self.log("loss", output["loss"])
        return output


def interrupted(root: Path, signum: int, *callbacks: L.Callback) -> Interrupted:
    """Train until ``signum`` arrives after step 3; the ``Interrupted`` it ends with."""
    L.seed_everything(0)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        callbacks=[SignalAt(step=3, signum=signum), Interrupt(["fit", "--data.data_dir=my data"]), *callbacks],
        logger=CSVLogger(root / "logs", name="run"),
        log_every_n_steps=1,  # every step logged, to be written out when it stops
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root / "run",
    )
    # The handlers a process started from a terminal has. Test runners change them: pytest-xdist's workers start with
    # SIGINT ignored (which Interrupt leaves ignored: test_lightning_conventions), and mutmut's with a SIGTERM handler
    # that exits 0, which would pass any test that sends SIGTERM.
    outside = {s: signal.getsignal(s) for s in Interrupt.SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        handlers = {s: signal.getsignal(s) for s in Interrupt.SIGNALS}
        with pytest.raises(Interrupted) as stopped:
            trainer.fit(LoggingModel())
        assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back
    finally:
        for signum, handler in outside.items():
            signal.signal(signum, handler)
    return stopped.value


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_without_a_saver_it_saves_last_ckpt_in_the_run_folder(signum: int, tmp_path: Path) -> None:
    stopped = interrupted(tmp_path, signum)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert stopped.exit_code == 128 + signum
    assert str(stopped) == (
        f"interrupted by {signal.Signals(signum).name} at step 3 (epoch 0); saved {path}: resume with: "
        f"python -m lit_transfer fit '--data.data_dir=my data' --ckpt_path={path}"
    )
    assert torch.load(path, weights_only=True)["global_step"] == 3
    with open(tmp_path / "logs" / "run" / "version_0" / "metrics.csv") as metrics:  # the logs written out
        assert [row["step"] for row in csv.DictReader(metrics)] == ["0", "1"]  # logged before the stop (3rd step)


def test_with_a_saver_it_saves_where_that_saver_keeps_last_ckpt(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "elsewhere", save_last=True, every_n_train_steps=100)
    stopped = interrupted(tmp_path, signal.SIGTERM, saver)
    path = tmp_path / "elsewhere" / "last.ckpt"
    assert f"saved {path}: resume with:" in str(stopped) and str(stopped).endswith(f"--ckpt_path={path}")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 3 and saver.last_model_path == str(path)
    assert not (tmp_path / "run" / "checkpoints").exists()
    # the saver's own state, as its every save records it: a resumed run's ModelCheckpoint carries on from it
    assert any(key.startswith("ModelCheckpoint") for key in checkpoint["callbacks"])


class TwoProcesses:
    """The part of a Trainer that ``Interrupt.on_train_batch_end`` reads, as rank 0 of a 2-process run sees it: the
    other process' signal arrives only through ``reduce_boolean_decision``, which is given DDPStrategy's semantics
    (all=True: every process decided so; all=False: any did). Stands in for a real DDP run (no quick test can start
    one) in the one branch a single process never takes."""

    world_size, global_step, current_epoch, checkpoint_callbacks, loggers = 2, 3, 0, [], []

    def __init__(self, root: Path, other_requested: bool) -> None:
        self.default_root_dir, self.other, self.saved = str(root), other_requested, []
        self.strategy = self

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        count = int(decision) + int(self.other)
        return count == self.world_size if all else count > 0

    def save_checkpoint(self, path: Path) -> None:
        self.saved.append(path)


@pytest.mark.parametrize(
    "here, there, stops",
    [(None, True, signal.SIGTERM), (signal.SIGINT, False, signal.SIGINT), (None, False, None)],
    ids=["the-other-process", "this-process", "neither"],
)
def test_a_signal_to_either_process_stops_both(here: int | None, there: bool, stops: int | None, tmp_path: Path):
    # Ctrl-C may reach one process only; both stop at the same step, or the other would wait in its next all-reduce
    interrupt = Interrupt(["fit"])
    interrupt.requested = here
    trainer = TwoProcesses(tmp_path, other_requested=there)
    if stops is None:
        interrupt.on_train_batch_end(trainer, None, None, None, 0)
        assert trainer.saved == []
        return
    with pytest.raises(Interrupted) as stopped:
        interrupt.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.saved == [tmp_path / "checkpoints" / "last.ckpt"]
    assert stopped.value.exit_code == 128 + stops  # the other process' signal unknown here: named SIGTERM
    assert str(stopped.value).startswith(f"interrupted by {signal.Signals(stops).name} at step 3 (epoch 0)")


def test_a_saver_without_last_ckpt_is_not_where_it_saves(tmp_path: Path) -> None:
    # a saver of the best checkpoints only (save_last off) keeps no last.ckpt: the run folder gets it
    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="loss", every_n_train_steps=100)
    stopped = interrupted(tmp_path, signal.SIGTERM, best)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(stopped).endswith(f"--ckpt_path={path}")
    assert torch.load(path, weights_only=True)["global_step"] == 3


def test_its_default_command_is_the_one_the_process_was_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/lib/lit_transfer/__main__.py", "fit", "--config", "configs/pretrain.yaml"])
    assert Interrupt().command == ["fit", "--config", "configs/pretrain.yaml"]


def test_one_interrupt_serves_several_fits(tmp_path: Path) -> None:
    # as a notebook reuses its callbacks: each fit installs the handlers and puts the process' own back
    interrupt = Interrupt(["fit"])
    handlers = {s: signal.getsignal(s) for s in Interrupt.SIGNALS}
    for run in range(2):
        trainer = L.Trainer(
            max_steps=2,
            callbacks=[interrupt],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path / str(run),
        )
        trainer.fit(LoggingModel())
        assert trainer.global_step == 2
        assert {s: signal.getsignal(s) for s in handlers} == handlers
