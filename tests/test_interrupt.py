"""``Interrupt`` in a plain Lightning ``Trainer`` (quick): where it saves with and without a ``last.ckpt`` saver,
the signal it names, the resume command, the logs written out. The CLI's own runs: test_lightning_conventions.py."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from crash import SignalAt
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_transfer import DigitsDataModule, TransferModule
from lit_transfer.callbacks.interrupt import Interrupt, Interrupted


def interrupted(root: Path, signum: int, *callbacks: L.Callback) -> Interrupted:
    """Train until ``signum`` arrives after step 3; the ``Interrupted`` it ends with."""
    L.seed_everything(0)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        callbacks=[SignalAt(step=3, signum=signum), Interrupt(["fit", "--data.data_dir=my data"]), *callbacks],
        logger=CSVLogger(root / "logs", name="run"),
        log_every_n_steps=1,  # steps 1-3 logged, to be written out
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root / "run",
    )
    data = DigitsDataModule(str(root), digits=[0, 1, 2, 3, 4], download=False, batch_size=8)
    # pytest-xdist's workers start with SIGINT ignored, which Interrupt leaves ignored (test_lightning_conventions):
    # Ctrl-C's default handler for this test, as a terminal's process has it
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handlers = {s: signal.getsignal(s) for s in Interrupt.SIGNALS}
        with pytest.raises(Interrupted) as stopped:
            trainer.fit(TransferModule(num_classes=5), datamodule=data)
        assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back
    finally:
        signal.signal(signal.SIGINT, outside)
    return stopped.value


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_without_a_saver_it_saves_last_ckpt_in_the_run_folder(signum: int, mnist_root: Path) -> None:
    stopped = interrupted(mnist_root, signum)
    path = mnist_root / "run" / "checkpoints" / "last.ckpt"
    assert stopped.exit_code == 128 + signum
    assert str(stopped) == (
        f"interrupted by {signal.Signals(signum).name} at step 3 (epoch 0); saved {path}: resume with: "
        f"python -m lit_transfer fit '--data.data_dir=my data' --ckpt_path={path}"
    )
    assert torch.load(path, weights_only=True)["global_step"] == 3
    metrics = (mnist_root / "logs" / "run" / "version_0" / "metrics.csv").read_text()  # the logs written out
    assert [row.split(",")[1] for row in metrics.splitlines()[1:]][:2] == ["0", "1"]  # steps logged so far


def test_with_a_saver_it_saves_where_that_saver_keeps_last_ckpt(mnist_root: Path) -> None:
    saver = ModelCheckpoint(dirpath=mnist_root / "elsewhere", save_last=True, every_n_train_steps=100)
    stopped = interrupted(mnist_root, signal.SIGTERM, saver)
    path = mnist_root / "elsewhere" / "last.ckpt"
    assert f"saved {path}: resume with:" in str(stopped) and str(stopped).endswith(f"--ckpt_path={path}")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 3 and saver.last_model_path == str(path)
    assert not (mnist_root / "run" / "checkpoints").exists()
    # the saver's own state, as its every save records it: a resumed run's ModelCheckpoint carries on from it
    assert any(key.startswith("ModelCheckpoint") for key in checkpoint["callbacks"])
