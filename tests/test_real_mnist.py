"""One epoch per stage on the real MNIST through the real CLI (found through LIT_TRANSFER_MNIST_ROOT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REAL_MNIST, only_run, results, run_cli

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not REAL_MNIST, reason="set LIT_TRANSFER_MNIST_ROOT to the folder that holds MNIST/raw/ (e.g. ../shared/data)"
    ),
]


def real_args(runs: Path, name: str) -> list[str]:
    return [
        f"--data.data_dir={REAL_MNIST}",
        "--data.download=false",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={runs / name}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


def test_one_epoch_per_stage_on_real_mnist(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_cli("fit", "--config=configs/pretrain.yaml", *real_args(runs, "pretrain"))
    first = results(only_run(runs / "pretrain"))
    assert first["digits"] == [5, 6, 7, 8, 9] and first["test_images"] == 4861  # every 5-9 test image
    assert first["total_params"] == 600_165 and first["frozen_params"] == 0
    assert first["test_acc"] >= 0.97, first
    run_cli("fit", "--config=configs/finetune.yaml", *real_args(runs, "finetune"), f"--ckpt_path={first['checkpoint']}")
    second = results(only_run(runs / "finetune"))
    assert second["digits"] == [0, 1, 2, 3, 4] and second["test_images"] == 5139
    assert (second["total_params"], second["frozen_params"], second["trainable_params"]) == (600_165, 9_568, 590_597)
    assert second["test_acc"] >= 0.97, second
    assert min(second["per_digit_acc"].values()) >= 0.9
