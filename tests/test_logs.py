"""What a run prints when its output goes to a file (CI, a job scheduler, ``> log.txt``): the bar's one line per epoch,
reports and tables each on their own lines; and in a terminal, still the live bar. Real CLI runs in new processes,
their stdout a file or a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import lightning as L
import pytest
from helpers import REPO, only_run, write_image_folder, write_mnist
from lightning.pytorch.demos.boring_classes import BoringModel

from lit_transfer.callbacks.progress import ProgressBar

EPOCHS = 5
BAR = ("it/s]", "s/it]", "%|")  # tqdm's marks: a bar's rate and its frame


def fit_args(data: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--config={REPO / 'configs/pretrain.yaml'}",
        f"--data.data_dir={data}",
        "--data.download=false",
        "--data.batch_size=4",  # 40 batches per epoch: a live bar would redraw 40 times, in a file 200 in all
        f"--trainer.default_root_dir={runs}",
        "--trainer.log_every_n_steps=1",
        "--trainer.accelerator=cpu",
        *extra,
    ]


def run(args: list[str], cwd: Path, stdout) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lit_transfer", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=900)


def assert_own_lines(text: str, starts: tuple[str, ...]) -> None:
    """No bar's carriage returns; every line that holds a report or table phrase starts with it, bar-free."""
    assert "\r" not in text
    for line in text.splitlines():
        for phrase in starts:
            if phrase in line:
                assert line.lstrip().startswith(phrase) and not any(b in line for b in BAR), line


@pytest.fixture(scope="module")
def stage_log(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 5-epoch stage one (80 batches per epoch) whose stdout is a file."""
    root = tmp_path_factory.mktemp("logs")
    data = write_mnist(root / "data", n_train=40)  # 200 images of 5-9, 160 of them for training
    log = root / "fit.log"
    with open(log, "w") as f:
        done = run(fit_args(data, root / "runs", f"--trainer.max_epochs={EPOCHS}"), root, f)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"text": log.read_text(), "size": log.stat().st_size, "root": root}


def test_a_stage_logged_to_a_file_writes_one_line_per_epoch(stage_log: dict) -> None:
    text = stage_log["text"]
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert all(re.match(r"epoch \d/5: \d+ batches, [\d.]+ s  .*val_acc [\d.]+", line) for line in epochs), epochs
    assert stage_log["size"] <= 15_000, stage_log["size"]
    assert not any(b in text for b in BAR)
    assert_own_lines(text, ("== pretrain on digits", "training:", "test loss:", "results:", "next:", "epoch "))


def test_predict_table_logged_to_a_file_has_its_own_lines(stage_log: dict) -> None:
    root = stage_log["root"]
    checkpoint = only_run(root / "runs") / "checkpoints" / "last.ckpt"
    images = write_image_folder(root / "scans", digits=(5, 6, 7), n_test=None)
    log = root / "predict.log"
    args = [
        "predict",
        f"--config={REPO / 'configs/pretrain.yaml'}",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={images}",
        f"--trainer.default_root_dir={root / 'runs'}",
        "--trainer.accelerator=cpu",
    ]
    with open(log, "w") as f:
        done = run(args, root, f)
    assert done.returncode == 0, done.stderr[-3000:]
    text = log.read_text()
    assert "file" in text and "predicted 24 files, 0 unreadable" in text, text
    assert_own_lines(text, ("file ", "predicted 24 files", "... and"))
    assert not any(b in text for b in BAR) and "Predicting" not in text


def test_a_terminal_keeps_the_live_bar(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", n_train=4)
    leader, follower = pty.openpty()
    # a 24x120 terminal (a new pseudo-terminal has 0 columns, where tqdm draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    args = fit_args(data, tmp_path / "runs", "--trainer.max_epochs=1")
    process = subprocess.Popen(
        [sys.executable, "-m", "lit_transfer", *args], cwd=tmp_path, env=env, stdout=follower, stderr=subprocess.DEVNULL
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=900) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and "Epoch 0:" in text and any(b in text for b in BAR), text[-2000:]
    assert not any(line.startswith("epoch 1/1:") for line in text.splitlines())


class CountingBar(ProgressBar):
    """lit_transfer's bar, counting how often it gathers the metrics (a dict of every logged value, 0.2 ms)."""

    gathered = 0

    def get_metrics(self, trainer, pl_module):
        self.gathered += 1
        return super().get_metrics(trainer, pl_module)


@pytest.mark.parametrize("live", [False, True])
def test_the_bar_gathers_metrics_per_batch_only_when_it_draws(live: bool, tmp_path: Path, capsys) -> None:
    """Without a live bar the metrics are read for the epoch's line only, not after every batch (Lightning's own
    hook reads them each batch even when its bars are disabled)."""
    bar = CountingBar(live=live)
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=30,
        limit_val_batches=0,
        callbacks=[bar],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    if live:
        assert bar.gathered >= 2 * 30  # a live bar redraws its metrics after every batch
    else:
        assert bar.gathered == 2  # once per epoch, for its line
        assert re.findall(r"^epoch (\d)/2: 30 batches", capsys.readouterr().out, flags=re.M) == ["1", "2"]
