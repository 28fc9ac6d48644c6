"""Fixtures (the helpers they use live in tests/helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Set before torch loads OpenMP, for this process and every process the tests start. The suite runs two workers on
# CI's two cores, each training with torch's threads: spinning OpenMP threads then take the time slices the others
# wait for (docs/cli.md, "a CPU that other busy processes share"). How threads wait, not what they compute: the
# numbers stay the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from helpers import common_args, folder_args, only_run, results, run_cli, write_image_folder, write_mnist

pytest_plugins = ["process_guard"]  # processes the tests start: signals at their defaults, none left behind


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """Each test starts with torch's thread count of the test run: commands run in-process here set it for their
    process (the demo's 1 thread, DDP's threads per process), and a later run with 1 thread instead of 2 sums in
    another order and gets other numbers (issue 36: the notebook's 90.23% against 90.04% of the command line)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's cache folder (image caches, the bf16 probe's result) in a folder of the test session, for this
    process and the processes it starts: the tests never read or write the real one."""
    folder = tmp_path_factory.mktemp("xdg_cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What an evaluation prints about the data and classes it uses (Lightning's rank_zero_info, on the console)."""
    lines: list[str] = []
    monkeypatch.setattr("lit_transfer.command_line.evaluation.rank_zero_info", lines.append)
    return lines


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A data_dir with 120 training and 40 test images in torchvision's MNIST layout."""
    return write_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def folder_stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real folder stage: stage one on the synthetic IDX digits, then configs/folder_finetune.yaml on a 3-class
    image folder from its checkpoint. Its checkpoint, folder and results.json; stage one's checkpoint (``source``)
    and digits (``mnist``)."""
    root = tmp_path_factory.mktemp("folder_stage")
    mnist, folder, runs = write_mnist(root / "data"), write_image_folder(root / "imgs"), root / "runs"
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist, runs, "pretrain"), *tiny)
    source = only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"
    own = folder_args(folder, runs, "own", root / "cache")
    run_cli("fit", "--config=configs/folder_finetune.yaml", *own, "--trainer.max_epochs=3", f"--ckpt_path={source}")
    run = only_run(runs / "own")
    checkpoint = run / "checkpoints" / "last.ckpt"
    return {"checkpoint": checkpoint, "folder": folder, "results": results(run), "source": source, "mnist": mnist}


# The quick loop, `python -m pytest -m "not slow"` (about a minute on 2 cores; README): these files start
# subprocesses, servers, Ray, a browser or a kernel, or train on the real MNIST (2026-12-02, full suite with
# --durations=0: 10-230 s each). Tests elsewhere that are slow carry @pytest.mark.slow themselves.
SLOW_FILES = {
    "test_cpu.py", "test_ddp.py", "test_demo.py", "test_docs.py", "test_export.py", "test_folder.py",
    "test_legacy_checkpoints.py", "test_logs.py", "test_newcomer_cli.py", "test_notebook.py",
    "test_own_data_real.py", "test_process_guard.py", "test_real_mnist.py", "test_resume.py",
    "test_setup_check.py", "test_study.py", "test_study_ray.py", "test_web.py",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
