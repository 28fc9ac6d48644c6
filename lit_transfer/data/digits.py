"""``DigitsDataModule``: the MNIST-family IDX datasets filtered to chosen digits (labels remapped to 0..k-1)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torchvision import datasets

from lit_transfer.data.base import ImagesDataModule
from lit_transfer.errors import UserError, count

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}
# (file stem, IDX magic number, number of dimensions) of the four files torchvision's MNIST-style classes read
IDX_FILES = {
    "train": (("train-images-idx3-ubyte", 0x803, 3), ("train-labels-idx1-ubyte", 0x801, 1)),
    "test": (("t10k-images-idx3-ubyte", 0x803, 3), ("t10k-labels-idx1-ubyte", 0x801, 1)),
}


def check_digits(digits: list[int]) -> None:
    if not digits:
        raise UserError("--data.digits is empty: give at least one digit, e.g. --data.digits '[5,6,7,8,9]'")
    bad = [d for d in digits if not 0 <= d <= 9]
    if bad:
        raise UserError(f"--data.digits has {bad} outside 0-9: use digits from 0 to 9, e.g. '[0,1,2,3,4]'")
    repeated = sorted({d for d in digits if digits.count(d) > 1})
    if repeated:
        raise UserError(f"--data.digits repeats {repeated}: list each digit once, e.g. '[0,1,2,3,4]'")


def read_idx(path: Path, magic: int, ndim: int) -> Tensor:
    """An IDX file (uncompressed, or gzipped as distributions ship them: ``.gz``) as a uint8 tensor, after a check of
    its header against its size that names what is wrong (torchvision only asserts)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"{path} cannot be read ({err}): replace it with the original file") from None
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise UserError(
            f"{path} is not an IDX file of the expected kind (magic number {magic:#x}): "
            "replace it with the original file"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != (expected := header + math.prod(dims)):
        raise UserError(
            f"{path} holds {len(data)} bytes but its header promises {expected} (truncated or damaged): "
            "replace it with the original file"
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(dims)


# Where a distribution installs a dataset's files, read when <data_dir> does not hold them (Debian's package
# dataset-fashion-mnist: the four files, gzipped)
SYSTEM_FOLDERS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
PACKAGES = {"fashion_mnist": "on Debian: apt-get install dataset-fashion-mnist, which is read from {folder}/"}


class DigitsDataModule(ImagesDataModule):
    """MNIST-style digits (MNIST, Fashion-MNIST, KMNIST) filtered to ``digits``: label ``i`` is the real digit
    ``digits[i]``. The IDX files are read here (uncompressed or gzipped, each checked with an error that names what
    is wrong); torchvision's dataset classes download them."""

    def __init__(
        self,
        data_dir: str = "data/",
        digits: list[int] = [5, 6, 7, 8, 9],  # noqa: B006 (jsonargparse shows list defaults; never mutated)
        dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist",
        download: bool = True,
        batch_size: int = 128,
        val_size: float = 0.1,
        train_per_class: int | None = None,
        seed: int = 0,
        predict_path: str | None = None,
    ) -> None:
        """
        Args:
            data_dir: Root in torchvision's layout, ``<data_dir>/MNIST/raw/`` (plain or ``.gz``); Debian's
                Fashion-MNIST is found too.
            digits: The classes to keep, in label order: label ``i`` is digit ``digits[i]``.
            dataset: Which torchvision dataset class reads the files.
            download: Download the files into ``data_dir`` when they are missing.
            batch_size: Images per batch and per device (128 in the notebook).
            val_size: Fraction of the chosen digits' training images held out for validation (0 disables
                validation). The test split is only used for the final test metrics.
            train_per_class: Keep only this many training images per digit (a label budget; ``None`` keeps all).
                The validation split is taken first, from all images.
            seed: Seed of the validation split, the label budget and of the per-epoch shuffling.
            predict_path: ``predict`` only: an image file, a folder of images (searched recursively) or a glob;
                ``None`` predicts the test split.
        """
        super().__init__(batch_size, val_size, train_per_class, seed, predict_path)
        check_digits(digits)
        self.save_hyperparameters()
        self.data_dir, self.digits, self.dataset, self.download = data_dir, list(digits), dataset, download

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in self.digits]

    @property
    def raw_folder(self) -> Path:
        """``<data_dir>/<Dataset>/raw``, torchvision's layout; else the system's copy where that has the files."""
        own = Path(self.data_dir) / DATASETS[self.dataset].__name__ / "raw"
        system = SYSTEM_FOLDERS.get(self.dataset)
        if not self._complete(own) and system is not None and self._complete(system):
            return system
        return own

    @staticmethod
    def locate(folder: Path, stem: str) -> Path | None:
        """The IDX file ``stem`` in ``folder``, uncompressed or gzipped (``<stem>.gz``); None if neither."""
        return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)

    @classmethod
    def _complete(cls, folder: Path) -> bool:
        return all(cls.locate(folder, stem) for files in IDX_FILES.values() for stem, _, _ in files)

    def _files_present(self) -> bool:
        return self._complete(self.raw_folder)

    def prepare_data(self) -> None:
        """Download if asked and needed; otherwise fail early with where we looked and how to lay files out."""
        if self.predicting_files or self._files_present():
            return  # predict on image files needs no dataset
        if self.download:
            try:
                for train in (True, False):
                    DATASETS[self.dataset](self.data_dir, train=train, download=True)
                return
            except Exception as err:  # no network, proxy, disk full: all end the same way for the user
                reason = f"download failed ({type(err).__name__}: {err})"
        else:
            reason = "--data.download is false"
        stems = ", ".join(stem for files in IDX_FILES.values() for stem, _, _ in files)
        hint = ""
        if (Path(self.data_dir) / "train-images-idx3-ubyte").is_file():
            hint = f" (the files are directly in {self.data_dir}: pass its grandparent as --data.data_dir)"
        system = SYSTEM_FOLDERS.get(self.dataset)
        where = f"; {PACKAGES[self.dataset].format(folder=system)}" if system else ""
        raise UserError(
            f"{self.dataset} not found in {self.raw_folder}/ and {reason}{hint}: put the four IDX files ({stems}; "
            f"uncompressed or .gz) there, or point --data.data_dir at the folder that holds "
            f"{DATASETS[self.dataset].__name__}/raw/{where}"
        )

    def read(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The split's images and labels of the chosen digits, and their positions in the IDX files."""
        self.prepare_data()  # a clear error also when setup() is called without prepare_data()
        (images_file, *images_spec), (labels_file, *labels_spec) = IDX_FILES[split]
        raw = self.raw_folder
        images_path, labels_path = self.locate(raw, images_file), self.locate(raw, labels_file)
        images, labels = read_idx(images_path, *images_spec), read_idx(labels_path, *labels_spec).long()
        if len(images) != len(labels):
            raise UserError(
                f"{images_path} holds {count(len(images), 'image')} but {labels_path.name} holds "
                f"{count(len(labels), 'label')}: the files come from different sets; replace them with matching "
                "originals"
            )
        if (bad := labels.ge(10).sum().item()) or labels.lt(0).any():
            raise UserError(f"{labels_path} has {count(bad, 'label')} outside 0-9: replace the file")
        # Keep the chosen digits and remap to 0..k-1 in the order given (lookup table: digit -> label).
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[self.digits] = torch.arange(len(self.digits))
        keep = lookup[labels] >= 0
        if not keep.any():
            raise UserError(f"no image of digits {self.digits} in {labels_path}")
        return images[keep].contiguous(), lookup[labels[keep]], keep.nonzero().squeeze(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dataset={self.dataset!r}, digits={self.digits})"
