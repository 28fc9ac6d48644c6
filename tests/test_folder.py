"""Image folders as a dataset: the identity path from IDX files, the held-out share, the cache, and transfer from an
MNIST stage to a folder's classes through the real CLI, with the class names in results, report and checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import common_args, folder_args, only_run, results, run_cli, snapshot, write_image_folder
from PIL import Image
from torchvision.datasets import MNIST

from lit_transfer.checkpoint import MARKER
from lit_transfer.data import DigitsDataModule
from lit_transfer.data.folders import FolderDataModule

NAMES = ["bar0", "bar1", "bar2"]


def folder_data(folder: Path, cache: Path, **settings) -> DigitsDataModule:
    return FolderDataModule(data_dir=str(folder), cache_dir=str(cache), **settings)


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def write_from_idx(mnist_root: Path, folder: Path, digits: list[int]) -> None:
    """The IDX files' images of ``digits`` as 28x28 PNGs named by their position in the file."""
    for split, train in (("train", True), ("test", False)):
        data = MNIST(str(mnist_root), train=train)
        for position, (image, label) in enumerate(zip(data.data, data.targets.tolist(), strict=True)):
            if label in digits:
                (folder / split / str(label)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.numpy()).save(folder / split / str(label) / f"{position:05d}.png")


def test_folder_written_from_idx_files_trains_exactly_as_the_idx_files(mnist_root: Path, tmp_path: Path) -> None:
    folder, cache, runs = tmp_path / "png", tmp_path / "cache", tmp_path / "runs"
    write_from_idx(mnist_root, folder, [3, 7])
    idx = DigitsDataModule(data_dir=str(mnist_root), digits=[3, 7], download=False)
    own = folder_data(folder, cache, classes=["3", "7"])
    for split in ("train", "test"):
        (a, la, _), (b, lb, _) = idx.read(split), own.read(split)
        assert torch.equal(a, b) and torch.equal(la, lb), split
    # Same images in the same order: the same seeded split, shuffling and therefore the same training, bit for bit.
    tiny = ["--trainer.max_epochs=2"]
    run_cli(
        "fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "idx"), *tiny, "--data.digits=[3,7]"
    )
    own_args = [*folder_args(folder, runs, "png", cache), "--data.classes=[3,7]"]
    run_cli("fit", "--config=configs/pretrain.yaml", *own_args, *tiny)
    first, second = results(only_run(runs / "idx")), results(only_run(runs / "png"))
    assert first["test_acc"] == second["test_acc"] and first["test_images"] == second["test_images"] == 8
    weights = state(first["checkpoint"])["state_dict"], state(second["checkpoint"])["state_dict"]
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


def test_without_a_test_folder_a_fixed_stratified_share_is_held_out(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "imgs", n_train=10, n_test=None)
    cache = tmp_path / "cache"

    def split(**settings) -> tuple[list[str], list[str]]:
        data = folder_data(folder, cache, **settings)
        return data.folder.read("test")[2], data.folder.read("train")[2]

    test, train = split()
    assert len(test) == 6 and len(train) == 24  # round(0.2 * 10) = 2 of each class's 10 images
    assert sorted(Path(f).parent.name for f in test) == sorted(NAMES * 2)
    assert not set(test) & set(train) and len(set(test) | set(train)) == 30
    assert split(seed=7)[0] == test  # the same images whatever the seed
    # spread over each class (a hash of the path), not its first file names (e.g. the first photo session)
    firsts = {f for name in NAMES for f in sorted(f for f in train + test if f"/{name}/" in f)[:2]}
    assert set(test) != firsts
    assert len(split(test_size=0.5)[0]) == 15
    # A file added to one class leaves the other classes' held-out images where they were.
    Image.new("L", (28, 28), 200).save(folder / "train" / "bar0" / "99999.png")
    again = split()[0]
    assert [f for f in again if "bar0" not in f] == [f for f in test if "bar0" not in f]


def test_cache_is_reused_and_a_changed_folder_decoded_again(tmp_path: Path, caplog) -> None:
    folder, cache = write_image_folder(tmp_path / "imgs"), tmp_path / "cache"
    before = snapshot(folder)
    folder_data(folder, cache).prepare_data()
    assert caplog.text.count("lit_transfer: decoded") == 2  # train/ and test/
    assert len(list(cache.glob("*.pt"))) == 2 and snapshot(folder) == before  # nothing written into the folder
    caplog.clear()
    folder_data(folder, cache).prepare_data()
    assert "decoded" not in caplog.text and caplog.text.count("read from the cache") == 2
    # Touched (same content, new modification time): decoded again; test/ still comes from the cache.
    caplog.clear()
    first = folder / "train" / "bar1" / sorted(os.listdir(folder / "train" / "bar1"))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    folder_data(folder, cache).prepare_data()
    assert f"decoded 24 images of {folder / 'train'}" in caplog.text and "read from the cache" in caplog.text
    # Replaced by another image: the new image is what the split holds.
    caplog.clear()
    Image.new("L", (28, 28), 77).save(first)
    data = folder_data(folder, cache)
    data.prepare_data()
    assert f"decoded 24 images of {folder / 'train'}" in caplog.text
    files = data.folder.files["train"][0]
    new = data.folder.decoded("train")[files.index(str(first))]
    assert torch.equal(new, torch.full((28, 28), 77, dtype=torch.uint8))


def pretrain(mnist_root: Path, runs: Path) -> Path:
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pretrain"), *tiny)
    return only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    "config",
    [["--config=configs/folder_finetune.yaml"], ["--config=configs/finetune.yaml", "--data=FolderDataModule"]],
)
def test_transfer_from_mnist_to_a_folder(config: list[str], mnist_root: Path, tmp_path: Path, capsys, caplog) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    folder = write_image_folder(tmp_path / "imgs")
    source = pretrain(mnist_root, runs)
    args = folder_args(folder, runs, "own", cache)
    run_cli("fit", *config, *args, "--trainer.max_epochs=2", f"--ckpt_path={source}")
    assert "starting this stage from the weights" in caplog.text and "newly initialised" in caplog.text
    run = only_run(runs / "own")
    before, after = state(source), state(run / "checkpoints" / "last.ckpt")
    for key in ("backbone.conv1.weight", "backbone.conv2.bias"):
        assert torch.equal(before["state_dict"][key], after["state_dict"][key]), f"{key} changed while frozen"
    assert after["state_dict"]["head.fc2.weight"].shape == (3, 128)  # one output per class folder
    assert after[MARKER]["classes"] == NAMES and after[MARKER]["dataset"] == "folder"
    report = results(run)
    assert report["classes"] == NAMES and list(report["per_class_acc"]) == NAMES and report["digits"] is None
    assert "per_digit_acc" not in report and len(report["confusion"]) == 3 and report["test_images"] == 9
    printed = capsys.readouterr().out
    assert f"== finetune on classes bar0, bar1, bar2 (folder {folder})" in printed
    assert "per class: bar0: " in printed


def test_a_folder_stage_resumes_its_own_checkpoint_not_an_mnist_stage(mnist_root: Path, tmp_path: Path, caplog) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    folder = write_image_folder(tmp_path / "imgs")
    source = pretrain(mnist_root, runs)
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    # An MNIST stage two: frozen like the folder stage, but another dataset and other classes.
    mnist_args = common_args(mnist_root, runs, "mnist2")
    run_cli("fit", "--config=configs/finetune.yaml", *mnist_args, *tiny, f"--ckpt_path={source}")
    mnist_stage = only_run(runs / "mnist2") / "checkpoints" / "last.ckpt"
    caplog.clear()
    own = ["fit", "--config=configs/folder_finetune.yaml", *folder_args(folder, runs, "own", cache)]
    run_cli(*own, *tiny, f"--ckpt_path={mnist_stage}")
    assert "starting this stage from the weights" in caplog.text and "resuming" not in caplog.text
    first = only_run(runs / "own") / "checkpoints" / "last.ckpt"
    caplog.clear()
    run_cli(*own, "--trainer.max_epochs=2", "--trainer.limit_train_batches=1", f"--ckpt_path={first}")
    assert "resuming this stage" in caplog.text
    resumed = state(sorted((runs / "own").glob("version_*"))[-1] / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2 and resumed["global_step"] == 2


def test_classes_chosen_by_name_in_the_order_given(tmp_path: Path) -> None:
    folder, cache = write_image_folder(tmp_path / "imgs"), tmp_path / "cache"
    data = folder_data(folder, cache, classes=["bar2", "bar0"])
    assert data.num_classes == 2 and data.class_names == ["bar2", "bar0"]
    images, labels, _ = data.read("test")
    assert [Path(f).parent.name for f in data.test_files] == [["bar2", "bar0"][i] for i in labels.tolist()]
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1] and images.shape == (6, 28, 28)


def test_an_evaluated_folder_checkpoint_keeps_its_classes_when_a_class_folder_is_added(tmp_path: Path, capsys) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    folder = write_image_folder(tmp_path / "imgs")
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    run_cli("fit", "--config=configs/pretrain.yaml", *folder_args(folder, runs, "own", cache), *tiny)
    ckpt = only_run(runs / "own") / "checkpoints" / "last.ckpt"
    write_image_folder(folder, digits=(5,))  # a class folder "bar5" added later
    run_cli("test", "--config=configs/pretrain.yaml", *folder_args(folder, runs, "eval", cache), f"--ckpt_path={ckpt}")
    report = results(only_run(runs / "eval" / "test"))
    assert report["classes"] == NAMES and report["test_images"] == 9


@pytest.mark.slow
def test_ddp_two_cpu_processes_on_a_folder(tmp_path: Path) -> None:
    from test_ddp import cli_subprocess

    runs, cache = tmp_path / "runs", tmp_path / "cache"
    folder = write_image_folder(tmp_path / "imgs")
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=1"]
    done = cli_subprocess("fit", "--config=configs/pretrain.yaml", *folder_args(folder, runs, "ddp", cache), *ddp)
    assert done.stdout.count("== pretrain on classes bar0, bar1, bar2") == 1  # only rank 0 reports
    report = results(only_run(runs / "ddp"))
    # each process trains on its half of the training split, and the test metrics cover all 9 test images
    assert report["world_size"] == 2 and report["test_images"] == 9 and report["classes"] == NAMES
    assert len(list(cache.glob("*.pt"))) == 2  # train/ and test/, decoded once
