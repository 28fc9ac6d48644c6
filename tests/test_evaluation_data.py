"""``test``, ``validate`` and ``predict`` evaluate a checkpoint on the data it was trained for: image-folder
checkpoints and digit checkpoints each with their own kind of config, ``--data.classes`` a new label order or a
contradiction, and a first line that says which classes are used. (The digits' side:
tests/test_lightning_conventions.py and tests/test_errors.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import common_args, folder_args, only_run, results, run_cli
from test_errors import fails
from test_predict_files import make_files, predict


def evaluated(config: str, data_args: list[str], ckpt: Path, runs: Path, *extra: str) -> dict:
    """``test`` of ``ckpt`` with configs/<config>.yaml and ``data_args`` (which name ``runs``): its results.json."""
    run_cli("test", f"--config=configs/{config}.yaml", *data_args, f"--ckpt_path={ckpt}", *extra)
    return results(only_run(runs / "e" / "test"))


def on_folder(folder: Path, ckpt: Path, runs: Path, *extra: str) -> dict:
    return evaluated("folder_finetune", folder_args(folder, runs, "e", runs.parent / "cache"), ckpt, runs, *extra)


def on_digits(config: str, data: Path, ckpt: Path, runs: Path, *extra: str) -> dict:
    return evaluated(config, common_args(data, runs, "e"), ckpt, runs, *extra)


def copied(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy outside any run folder, so that the evaluation goes to --trainer.default_root_dir."""
    ckpt = tmp_path / "stage.ckpt"
    ckpt.write_bytes(checkpoint.read_bytes())
    return ckpt


def with_a_class_added(folder_stage: dict, tmp_path: Path, name: str) -> Path:
    """A copy of the stage's image folder with one more class, ``name``: bar1's images again."""
    folder = tmp_path / "imgs"
    shutil.copytree(folder_stage["folder"], folder)
    for split in ("train", "test"):
        shutil.copytree(folder / split / "bar1", folder / split / name)
    return folder


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_a_folder_checkpoint_with_a_digits_config_names_the_folder_config(
    subcommand: str, folder_stage: dict, tmp_path: Path, capsys
) -> None:
    ckpt = folder_stage["checkpoint"]
    args = [*common_args(folder_stage["mnist"], tmp_path / "runs", "e"), f"--ckpt_path={ckpt}"]
    message = fails(capsys, subcommand, "--config=configs/pretrain.yaml", *args)
    assert message == (
        f"lit_transfer: error: {ckpt} was trained on folder, not on this data: evaluate it with --data "
        "FolderDataModule --data.data_dir <its folder> (or --config configs/folder_finetune.yaml)"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_a_digits_checkpoint_with_a_folder_config_names_the_digits_config(
    subcommand: str, folder_stage: dict, tmp_path: Path, capsys
) -> None:
    ckpt = folder_stage["source"]
    args = folder_args(folder_stage["folder"], tmp_path / "runs", "e", tmp_path / "cache")
    message = fails(capsys, subcommand, "--config=configs/folder_finetune.yaml", *args, f"--ckpt_path={ckpt}")
    assert message == (
        f"lit_transfer: error: {ckpt} was trained on mnist, not on this data: evaluate it with its digits' config "
        "(e.g. --config configs/pretrain.yaml)"
    )
    assert not (tmp_path / "runs").exists()


def test_predict_files_with_a_folder_config_names_a_digits_checkpoints_classes(
    folder_stage: dict, tmp_path: Path, said: list[str]
) -> None:
    scans = tmp_path / "scans"
    make_files(scans)
    rows = predict(tmp_path, folder_stage["source"], str(scans / "b"))
    assert len(rows) == 4 and {r["predicted"] for r in rows} <= {"5", "6", "7", "8", "9"}
    assert said == [
        "lit_transfer: predict with the checkpoint's classes 5, 6, 7, 8, 9 (mnist); the config's are not used"
    ]


def test_data_classes_in_another_order_relabel_the_folder(folder_stage: dict, tmp_path: Path, said: list[str]) -> None:
    # the checkpoint's head stays; --data.classes says which folder each of its outputs stands for
    ckpt = copied(folder_stage["checkpoint"], tmp_path)
    report = on_folder(folder_stage["folder"], ckpt, tmp_path / "runs", "--data.classes=[bar2,bar1,bar0]")
    assert list(report["per_class_acc"]) == ["bar2", "bar1", "bar0"]
    assert said == [
        "lit_transfer: test with --data.classes bar2, bar1, bar0; the checkpoint was trained on bar0, bar1, bar2"
    ]
    # without --data.classes: the checkpoint's own, in its own order, and nothing to say
    said.clear()
    own = on_folder(folder_stage["folder"], ckpt, tmp_path / "own")
    assert list(own["per_class_acc"]) == ["bar0", "bar1", "bar2"] and said == []
    assert own["test_acc"] == pytest.approx(folder_stage["results"]["test_acc"])


def test_data_classes_of_another_count_are_refused(folder_stage: dict, tmp_path: Path, capsys) -> None:
    ckpt = folder_stage["checkpoint"]
    args = folder_args(folder_stage["folder"], tmp_path / "runs", "e", tmp_path / "cache")
    message = fails(
        capsys,
        "test",
        "--config=configs/folder_finetune.yaml",
        *args,
        f"--ckpt_path={ckpt}",
        "--data.classes=[bar0,bar1]",
    )
    assert message == (
        f"lit_transfer: error: {ckpt} has a head for 3 classes (bar0, bar1, bar2) and --data.classes gives 2 (bar0, "
        "bar1): give 3, or leave out --data.classes to use the checkpoint's own"
    )


def test_a_class_folder_added_since_training_shifts_nothing(
    folder_stage: dict, tmp_path: Path, said: list[str]
) -> None:
    # Without --data.classes an evaluation uses the checkpoint's classes in its label order, not every folder now
    # there: a fourth class folder is left out, and the three keep their labels.
    folder = with_a_class_added(folder_stage, tmp_path, "bar05")  # sorts between bar0 and bar1
    report = on_folder(folder, copied(folder_stage["checkpoint"], tmp_path), tmp_path / "runs")
    assert list(report["per_class_acc"]) == ["bar0", "bar1", "bar2"] and said == []
    assert report["test_acc"] == pytest.approx(folder_stage["results"]["test_acc"])


def test_a_folder_checkpoint_that_names_no_classes_takes_the_folders(
    folder_stage: dict, tmp_path: Path, capsys
) -> None:
    checkpoint = torch.load(folder_stage["checkpoint"], weights_only=True)
    del checkpoint["lit_transfer"]["classes"]  # made by hand, or by other code
    ckpt = tmp_path / "nameless.ckpt"
    torch.save(checkpoint, ckpt)
    report = on_folder(folder_stage["folder"], ckpt, tmp_path / "runs")
    assert list(report["per_class_acc"]) == ["bar0", "bar1", "bar2"]
    assert report["test_acc"] == pytest.approx(folder_stage["results"]["test_acc"])
    # a folder of four classes for its head of three
    folder = with_a_class_added(folder_stage, tmp_path, "bar3")
    args = folder_args(folder, tmp_path / "more", "e", tmp_path / "cache")
    message = fails(capsys, "test", "--config=configs/folder_finetune.yaml", *args, f"--ckpt_path={ckpt}")
    assert message == (
        f"lit_transfer: error: {ckpt} has a head for 3 classes (0, 1, 2) and the data has 4 (bar0, bar1, bar2, bar3): "
        "choose 3 with --data.classes"
    )


def test_the_checkpoints_dataset_and_digits_named_again_change_nothing(
    folder_stage: dict, tmp_path: Path, said: list[str]
) -> None:
    ckpt = copied(folder_stage["source"], tmp_path)  # digits 5-9 of mnist
    options = ["--data.dataset=mnist", "--data.digits=[5,6,7,8,9]"]
    report = on_digits("finetune", folder_stage["mnist"], ckpt, tmp_path / "runs", *options)
    assert list(report["per_digit_acc"]) == ["5", "6", "7", "8", "9"]
    assert said == []


def test_data_digits_of_the_same_count_relabel_the_head(folder_stage: dict, tmp_path: Path, said: list[str]) -> None:
    ckpt = copied(folder_stage["source"], tmp_path)
    report = on_digits("pretrain", folder_stage["mnist"], ckpt, tmp_path / "runs", "--data.digits=[0,1,2,3,4]")
    assert list(report["per_digit_acc"]) == ["0", "1", "2", "3", "4"]
    assert said == [
        "lit_transfer: test with --data.digits [0, 1, 2, 3, 4]; the checkpoint was trained on [5, 6, 7, 8, 9]"
    ]


def test_a_checkpoint_of_another_dataset_is_evaluated_on_its_own(
    folder_stage: dict, tmp_path: Path, said: list[str]
) -> None:
    # A Kuzushiji-MNIST checkpoint (here: the marker says so) with stage one's MNIST config: evaluated on KMNIST,
    # and the first line says so.
    checkpoint = torch.load(folder_stage["source"], weights_only=True)
    checkpoint["lit_transfer"]["dataset"] = "kmnist"
    ckpt = tmp_path / "kmnist.ckpt"
    torch.save(checkpoint, ckpt)
    data = tmp_path / "data"
    shutil.copytree(folder_stage["mnist"] / "MNIST" / "raw", data / "KMNIST" / "raw")  # the same synthetic files
    report = on_digits("pretrain", data, ckpt, tmp_path / "runs")
    assert report["dataset"] == "kmnist" and list(report["per_digit_acc"]) == ["5", "6", "7", "8", "9"]
    assert said == ["lit_transfer: test on the checkpoint's dataset kmnist, not the config's mnist"]
