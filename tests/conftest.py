"""Fixtures (the helpers they use live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import common_args, folder_args, only_run, results, run_cli, write_image_folder, write_mnist


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A data_dir with 120 training and 40 test images in torchvision's MNIST layout."""
    return write_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def folder_stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real folder stage: stage one on the synthetic IDX digits, then configs/folder_finetune.yaml on a 3-class
    image folder from its checkpoint. Its checkpoint, folder and results.json."""
    root = tmp_path_factory.mktemp("folder_stage")
    mnist, folder, runs = write_mnist(root / "data"), write_image_folder(root / "imgs"), root / "runs"
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist, runs, "pretrain"), *tiny)
    source = only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"
    own = folder_args(folder, runs, "own", root / "cache")
    run_cli("fit", "--config=configs/folder_finetune.yaml", *own, "--trainer.max_epochs=3", f"--ckpt_path={source}")
    run = only_run(runs / "own")
    return {"checkpoint": run / "checkpoints" / "last.ckpt", "folder": folder, "results": results(run)}
