"""``ImagesDataModule``: what every DataModule here shares (validation split, label budget, batches drawn by index,
predict on image files). Digits: ``digits.py``; image folders: ``folders.py``."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lit_transfer.data.loader import EpochSampler, TensorBatches
from lit_transfer.errors import UserError
from lit_transfer.images.files import find_images, read_images


class ImagesDataModule(L.LightningDataModule):
    """What every dataset here shares: each split read once into uint8 tensors ``(N, 28, 28)`` and labels
    ``0..k-1`` (a subclass's ``read``), moved to the training device, a fixed validation split, an optional label
    budget, and batches drawn by index (``loader.py``); images are normalised on the device by the model.
    ``predict`` reads the test split, or the image files of ``predict_path``.

    Subclasses give ``dataset`` (what the checkpoint marker records), ``class_names`` and ``read(split)``.
    """

    dataset: str

    def __init__(
        self,
        batch_size: int = 128,
        val_size: float = 0.1,
        train_per_class: int | None = None,
        seed: int = 0,
        predict_path: str | None = None,
    ) -> None:
        """
        Args:
            batch_size: Images per batch and per device (128 in the notebook).
            val_size: Fraction of the training images held out for validation (0 disables validation). The test
                split is only used for the final test metrics.
            train_per_class: Keep only this many training images per class (a label budget; ``None`` keeps all).
                The validation split is taken first, from all images.
            seed: Seed of the validation split, the label budget and of the per-epoch shuffling.
            predict_path: ``predict`` only: an image file, a folder of images (searched recursively) or a glob;
                ``None`` predicts the test split.
        """
        super().__init__()
        if not 0 <= val_size < 1:
            raise UserError(f"--data.val_size is {val_size}: give a fraction in [0, 1), e.g. 0.1")
        if train_per_class is not None and train_per_class < 1:
            raise UserError(f"--data.train_per_class is {train_per_class}: give a positive number or null (all)")
        if batch_size < 1:
            raise UserError(f"--data.batch_size is {batch_size}: give a positive number, e.g. 128")
        self.batch_size, self.val_size, self.seed = batch_size, val_size, seed
        self.train_per_class = train_per_class
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.test_index: Tensor | None = None  # each test image's position in its source (an IDX file's numbering)
        self.test_files: list[str] | None = None  # an image folder's test files
        self.predict_path = predict_path
        self.predict_files: list[str] = []  # predict_path's files, readable or not
        self.predict_errors: dict[int, str] = {}  # position in predict_files -> why it could not be read

    @property
    def class_names(self) -> list[str]:
        """The real name of each label, in label order."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The ``train`` or ``test`` split: uint8 images ``(N, 28, 28)``, labels ``0..k-1``, each image's position
        in its source."""
        raise NotImplementedError

    @property
    def predicting_files(self) -> bool:
        return self.predict_path is not None and self.trainer is not None and self.trainer.state.fn == "predict"

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if stage in ("fit", "validate") and "train" not in self.splits:
            images, labels, _ = self.read("train")
            # Fixed split, independent of the training seed, so every stage and rank holds out the same images.
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
            n_val = round(self.val_size * len(labels))
            val, train = order[:n_val].sort().values, order[n_val:]
            if self.train_per_class is not None:  # the first n of each class in the seeded order
                train = torch.cat([train[labels[train] == c][: self.train_per_class] for c in range(self.num_classes)])
            train = train.sort().values
            self.splits["train"] = (images[train].to(device), labels[train].to(device))
            if n_val:
                self.splits["val"] = (images[val].to(device), labels[val].to(device))
        if stage == "predict" and self.predict_path is not None:
            self.predict_files = find_images(self.predict_path)
            images, self.predict_errors = read_images(self.predict_files)
            self.splits["predict"] = (images.to(device), torch.arange(len(images), device=device))
        elif stage in ("test", "predict") and "test" not in self.splits:
            images, labels, self.test_index = self.read("test")
            self.splits["test"] = (images.to(device), labels.to(device))

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        images, labels = self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochSampler(len(labels), self.batch_size, shuffle, self.seed, rank, world)
        return TensorBatches(images, labels, sampler)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches | list:
        return self._batches("val", shuffle=False) if "val" in self.splits else []

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("predict" if "predict" in self.splits else "test", shuffle=False)
