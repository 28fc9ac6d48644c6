"""FolderDataModule's own options, quick and in-process: the held-out share, the label budget, where the decoded
images are cached. The command line's runs on image folders: test_folder.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_image_folder

from lit_transfer import FolderDataModule
from lit_transfer.errors import UserError


def splits(data: FolderDataModule) -> dict[str, torch.Tensor]:
    """Images per class in each split, as a run would see them."""
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    return {name: torch.bincount(labels, minlength=data.num_classes) for name, (_, labels) in data.splits.items()}


def test_without_a_test_folder_test_size_is_the_share_of_each_class_held_out(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", n_train=8, n_test=None)  # 8 images of each of 3 classes
    data = FolderDataModule(str(folder), test_size=0.5, val_size=0, cache_dir=str(tmp_path / "cache"))
    assert {name: counts.tolist() for name, counts in splits(data).items()} == {"train": [4] * 3, "test": [4] * 3}


def test_train_per_class_is_a_label_budget_on_folders_too(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", n_train=8)
    data = FolderDataModule(str(folder), train_per_class=2, val_size=0, cache_dir=str(tmp_path / "cache"))
    assert splits(data)["train"].tolist() == [2, 2, 2]


def test_the_decoded_images_are_cached_in_cache_dir(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images")
    data = FolderDataModule(str(folder), cache_dir=str(tmp_path / "cache"))
    data.prepare_data()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # train and test
    assert repr(data) == f"FolderDataModule(data_dir={str(folder)!r})"


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.2])
def test_test_size_must_be_a_fraction(test_size: float, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        FolderDataModule(str(tmp_path), test_size=test_size)
    assert str(err.value) == f"--data.test_size is {test_size}: give a fraction in (0, 1), e.g. 0.2"
