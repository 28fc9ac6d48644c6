"""Test helpers: tiny MNIST-style IDX files and image folders written under tmp_path, and the real CLI run
in-process. Imported by the tests as ``from helpers import ...`` (pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from PIL import Image

from lit_transfer.cli import main
from lit_transfer.speed.cpu import flush_denormals

flush_denormals()  # as `python -m lit_transfer` does, before any test starts torch's CPU threads

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
REAL_MNIST = os.environ.get("LIT_TRANSFER_MNIST_ROOT")  # set by .ci/run to the folder that holds MNIST/raw/


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (big-endian header: magic 0x08<ndim>, then each dimension)."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def make_digits(n_per_digit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose digit is readable from a bright bar at a digit-dependent row, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_digit)
    images = torch.randint(0, 60, (len(labels), 28, 28), generator=g, dtype=torch.uint8)
    for i, d in enumerate(labels.tolist()):
        images[i, 2 + 2 * d : 4 + 2 * d, 4:24] = 255
    order = torch.randperm(len(labels), generator=g)
    return images[order], labels[order]


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 4) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = make_digits(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def write_image_folder(
    root: Path, digits: tuple[int, ...] = (0, 1, 2), n_train: int = 8, n_test: int | None = 3
) -> Path:
    """make_digits' images of ``digits`` as 28x28 grey PNGs: ``root/train/bar<d>/<i>.png`` (and ``test/`` unless
    ``n_test`` is None); class ``bar<d>`` has the bright bar of digit ``d``."""
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        if n is None:
            continue
        images, labels = make_digits(n, seed)
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            if label in digits:
                folder = root / split / f"bar{label}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.numpy(), "L").save(folder / f"{i:05d}.png")
    return root


def folder_args(data_dir: Path, runs: Path, name: str, cache: Path) -> list[str]:
    """common_args for an image folder, its cache under the test's own folder."""
    digits_only = "--data.download=false"  # image folders are never downloaded: FolderDataModule has no such option
    args = [a for a in common_args(data_dir, runs, name) if a != digits_only]
    return [*args, "--data=FolderDataModule", f"--data.cache_dir={cache}"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: equal snapshots = nothing written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def run_cli(*args: str) -> None:
    """The real command line, in-process (the run directory environment variable is per invocation), with
    pytest's own arguments out of sys.argv as a user's process would have them."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        main([str(a) for a in args])
    finally:
        sys.argv = argv


def common_args(data_dir: Path, runs: Path, name: str) -> list[str]:
    """Settings that make a CLI run tiny and quiet; the stage's own config stays in force otherwise."""
    return [
        f"--data.data_dir={data_dir}",
        "--data.download=false",
        "--data.batch_size=16",
        "--data.val_size=0.2",
        f"--trainer.default_root_dir={runs / name}",
        "--trainer.log_every_n_steps=1",  # the tiny runs have fewer batches than the default interval (50)
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        # benchmarks/gpu_check.sh runs some of these tests on a GPU with LIT_TRANSFER_TEST_ACCELERATOR=gpu
        f"--trainer.accelerator={os.environ.get('LIT_TRANSFER_TEST_ACCELERATOR', 'cpu')}",
    ]


def only_run(root: Path) -> Path:
    runs = sorted(p for p in root.glob("version_*") if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())
