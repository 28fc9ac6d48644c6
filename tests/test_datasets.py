"""The MNIST-family IDX files as DigitsDataModule reads them: uncompressed or gzipped (as Debian's
``dataset-fashion-mnist`` installs Fashion-MNIST), with a one-line error that says where to get missing ones."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import common_args, run_cli, write_idx, write_mnist
from PIL import Image

from lit_transfer.data import DigitsDataModule, digits
from lit_transfer.errors import UserError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def gzipped(raw: Path) -> None:
    """Each IDX file in ``raw`` replaced by its ``.gz``, as distributions ship them."""
    for path in list(raw.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


@pytest.mark.parametrize("split", ["train", "test"])
def test_gzipped_files_give_the_same_images_labels_and_positions(split: str, tmp_path: Path) -> None:
    plain = write_mnist(tmp_path / "plain", folder="FashionMNIST")
    packed = write_mnist(tmp_path / "packed", folder="FashionMNIST")
    gzipped(packed / "FashionMNIST" / "raw")
    digits = [0, 3, 9]
    a = DigitsDataModule(str(plain), digits, dataset="fashion_mnist", download=False).read(split)
    b = DigitsDataModule(str(packed), digits, dataset="fashion_mnist", download=False).read(split)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert set(a[1].tolist()) == {0, 1, 2}


def test_a_damaged_gzip_names_the_file(tmp_path: Path, capsys) -> None:
    root = write_mnist(tmp_path / "data", folder="FashionMNIST")
    raw = root / "FashionMNIST" / "raw"
    gzipped(raw)
    damaged = raw / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-40])
    args = ["fit", "--config=configs/pretrain.yaml", *common_args(root, tmp_path / "runs", "a")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, "--data.dataset=fashion_mnist")
    assert str(damaged) in str(exit_info.value) and len(str(exit_info.value).splitlines()) == 1


def test_missing_fashion_mnist_names_the_files_and_debians_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(digits.SYSTEM_FOLDERS, "fashion_mnist", tmp_path / "not-installed")
    args = ["fit", "--config=configs/pretrain.yaml", *common_args(tmp_path / "empty", tmp_path / "runs", "a")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, "--data.dataset=fashion_mnist")
    message = str(exit_info.value)
    assert len(message.splitlines()) == 1 and "train-images-idx3-ubyte" in message
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "not-installed") in message


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (as root)")
def test_debians_fashion_mnist_is_read_where_it_is_installed(tmp_path: Path) -> None:
    data = DigitsDataModule(str(tmp_path), list(range(10)), dataset="fashion_mnist", download=False)
    assert data.raw_folder == DEBIAN_FASHION  # <data_dir> has none: the system's copy
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels, positions = data.read(split)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert torch.equal(labels.bincount(), torch.full((10,), n // 10))  # balanced, as Fashion-MNIST is
        assert torch.equal(positions, torch.arange(n))
    own = write_mnist(tmp_path / "own", folder="FashionMNIST")  # a copy under <data_dir> comes first
    assert DigitsDataModule(str(own), [0], dataset="fashion_mnist").raw_folder == own / "FashionMNIST" / "raw"


def labels_in_order(loader) -> list[int]:
    return torch.cat([labels for _, labels in loader]).tolist()


def test_training_batches_are_shuffled_evaluation_ones_in_file_order_and_each_process_gets_its_share(tmp_path: Path):
    data = DigitsDataModule(str(write_mnist(tmp_path)), download=False, batch_size=4, val_size=0.2)
    data.setup("fit")
    data.setup("test")
    train, val, test = data.splits["train"][1].tolist(), data.splits["val"][1].tolist(), data.splits["test"][1].tolist()
    assert labels_in_order(data.val_dataloader()) == val and labels_in_order(data.test_dataloader()) == test
    assert labels_in_order(data.predict_dataloader()) == test  # no files to predict on: the test split
    shuffled = labels_in_order(data.train_dataloader())
    assert sorted(shuffled) == sorted(train) and shuffled != train  # 48 images: one order in 10^61 is the same
    data.trainer = SimpleNamespace(global_rank=1, world_size=2)  # the second of two processes (DDP)
    share = labels_in_order(data.train_dataloader())
    assert len(share) == len(train) // 2 and labels_in_order(data.test_dataloader()) == test[1::2]
    validating = DigitsDataModule(str(tmp_path), download=False, batch_size=4, val_size=0.2)
    validating.setup("validate")  # trainer.validate: the same held-out images
    assert labels_in_order(validating.val_dataloader()) == val
    no_validation = DigitsDataModule(str(tmp_path), download=False, val_size=0)
    no_validation.setup("fit")
    assert no_validation.val_dataloader() == [] and len(no_validation.splits["train"][1]) == len(train) + len(val)


def test_a_damaged_idx_file_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    labels = tmp_path / "labels-idx1-ubyte"
    write_idx(labels, torch.arange(5, dtype=torch.uint8))
    assert digits.read_idx(labels, 0x801, 1).tolist() == [0, 1, 2, 3, 4]
    fix = "replace it with the original file"
    truncated = tmp_path / "truncated-idx1-ubyte"
    truncated.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(UserError) as err:
        digits.read_idx(truncated, 0x801, 1)
    assert str(err.value) == f"{truncated} holds 12 bytes but its header promises 13 (truncated or damaged): {fix}"
    with pytest.raises(UserError) as err:
        digits.read_idx(labels, 0x803, 3)  # labels where images belong
    assert str(err.value) == f"{labels} is not an IDX file of the expected kind (magic number 0x803): {fix}"


def test_files_of_different_sets_or_with_labels_outside_0_to_9_are_named(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path) / "MNIST" / "raw"
    data = DigitsDataModule(str(tmp_path), download=False, digits=[7, 3])
    _, labels, positions = data.read("train")
    name, *spec = digits.IDX_FILES["train"][1]  # train-labels-idx1-ubyte, its magic number and dimensions
    labels_file = raw / name
    originals = digits.read_idx(labels_file, *spec)
    assert labels.dtype == torch.long and torch.equal(torch.tensor([7, 3])[labels], originals[positions].long())
    write_idx(labels_file, originals[:-1])
    with pytest.raises(UserError) as err:
        data.read("train")
    assert str(err.value) == (
        f"{raw / 'train-images-idx3-ubyte'} holds 120 images but train-labels-idx1-ubyte holds 119 labels: the files "
        "come from different sets; replace them with matching originals"
    )
    write_idx(labels_file, torch.cat([torch.tensor([10], dtype=torch.uint8), originals[1:]]))
    with pytest.raises(UserError) as err:
        data.read("train")
    assert str(err.value) == f"{labels_file} has 1 label outside 0-9: replace the file"
    write_idx(labels_file, torch.zeros_like(originals))
    with pytest.raises(UserError) as err:
        data.read("train")
    assert str(err.value) == f"no image of digits [7, 3] in {labels_file}"


def test_the_splits_are_put_on_the_trainers_device(tmp_path: Path) -> None:
    # once, at setup: the loaders then index tensors already there. "meta" stands in for a GPU: no GPU is needed
    data = DigitsDataModule(str(write_mnist(tmp_path)), download=False)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    data.setup("fit")
    assert sorted(data.splits) == ["train", "val"]  # the test split is read for testing only
    data.setup("test")
    assert {tensor.device.type for split in data.splits.values() for tensor in split} == {"meta"}
    # image files to predict on, too
    Image.new("L", (28, 28), 0).save(tmp_path / "blank.png")
    data = DigitsDataModule(str(tmp_path), download=False, predict_path=str(tmp_path / "blank.png"))
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    data.setup("predict")
    assert [tensor.device.type for tensor in data.splits["predict"]] == ["meta", "meta"]


STEMS = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


def not_found(data: DigitsDataModule) -> str:
    with pytest.raises(UserError) as err:
        data.prepare_data()
    return str(err.value)


def test_missing_files_say_where_they_were_looked_for_and_how_to_lay_them_out(tmp_path: Path, monkeypatch) -> None:
    expected = (
        f"mnist not found in {tmp_path}/MNIST/raw/ and --data.download is false: put the four IDX files ({STEMS}; "
        "uncompressed or .gz) there, or point --data.data_dir at the folder that holds MNIST/raw/"
    )
    assert not_found(DigitsDataModule(str(tmp_path), download=False)) == expected
    # the files directly in the folder given: the folder two levels up is the one to give
    write_mnist(tmp_path / "flat")
    flat = tmp_path / "flat" / "MNIST" / "raw"
    message = not_found(DigitsDataModule(str(flat), download=False))
    assert (
        f"--data.download is false (the files are directly in {flat}: pass its grandparent as --data.data_dir): "
        in message
    )
    # a dataset a system package provides names it (here its folder is empty)
    monkeypatch.setitem(digits.SYSTEM_FOLDERS, "fashion_mnist", tmp_path / "system")
    message = not_found(DigitsDataModule(str(tmp_path), download=False, dataset="fashion_mnist"))
    assert message.startswith(f"fashion_mnist not found in {tmp_path}/FashionMNIST/raw/ and --data.download is false: ")
    assert message.endswith(
        "the folder that holds FashionMNIST/raw/; on Debian: apt-get install dataset-fashion-mnist, which is read from "
        f"{tmp_path / 'system'}/"
    )


class OfflineMNIST:
    """What torchvision's ``MNIST(root, train=..., download=True)`` does, without a network: every IDX file into
    ``<root>/MNIST/raw`` (torchvision downloads all four whichever split is asked), or its error without
    ``download``."""

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        if not download:
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        write_mnist(Path(root))


def test_missing_files_are_downloaded_into_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(digits.DATASETS, "mnist", type("MNIST", (OfflineMNIST,), {}))
    data = DigitsDataModule(str(tmp_path / "data"))  # downloads by default: a newcomer's first run fetches MNIST
    data.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == sorted(STEMS.split(", "))
    data.setup("fit")
    assert len(data.splits["train"][1]) > 0


def test_a_failed_download_says_why(tmp_path: Path, monkeypatch) -> None:
    class Unreachable:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(digits.DATASETS, "mnist", type("MNIST", (Unreachable,), {}))
    message = not_found(DigitsDataModule(str(tmp_path), download=True))
    assert message.startswith(
        f"mnist not found in {tmp_path}/MNIST/raw/ and download failed (OSError: [Errno -3] Temporary failure in name "
        "resolution): put the four IDX files"
    )


def test_train_per_class_is_a_label_budget_on_digits(tmp_path: Path) -> None:
    data = DigitsDataModule(
        str(write_mnist(tmp_path, n_train=40)), [5, 6], download=False, val_size=0, train_per_class=2
    )
    data.setup("fit")
    _, labels = data.splits["train"]
    assert labels.bincount().tolist() == [2, 2]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("val_size", 1, "--data.val_size is 1: give a fraction in [0, 1), e.g. 0.1"),
        ("val_size", 1.5, "--data.val_size is 1.5: give a fraction in [0, 1), e.g. 0.1"),
        ("val_size", -0.1, "--data.val_size is -0.1: give a fraction in [0, 1), e.g. 0.1"),
        ("train_per_class", 0, "--data.train_per_class is 0: give a positive number or null (all)"),
        ("batch_size", 0, "--data.batch_size is 0: give a positive number, e.g. 128"),
    ],
)
def test_settings_out_of_range_are_refused(option: str, value: float, expected: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        DigitsDataModule(str(tmp_path), download=False, **{option: value})
    assert str(err.value) == expected


def test_the_smallest_settings_are_taken(tmp_path: Path) -> None:
    data = DigitsDataModule(str(write_mnist(tmp_path)), download=False, val_size=0.99, train_per_class=1, batch_size=1)
    data.setup("fit")
    assert (data.batch_size, data.val_size, data.train_per_class) == (1, 0.99, 1)
