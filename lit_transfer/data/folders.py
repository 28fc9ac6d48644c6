"""The image-folder DataModule: your own images, ``<data_dir>/train/<class>/<image>`` (and optionally ``test/``).

Each image becomes the network's 28x28 input by the rule in docs/own-data.md (``lit_transfer/images/rule.py``);
``lit_transfer/images/folders.py`` lists, decodes and caches the folders. Chosen on the command line with ``--data
FolderDataModule`` (configs/folder_*.yaml).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_transfer.data.base import ImagesDataModule
from lit_transfer.errors import UserError
from lit_transfer.images.folders import ImageFolderData


class FolderDataModule(ImagesDataModule):
    """Image folders: label ``i`` is ``classes[i]`` (by default every class folder of ``train/``, sorted)."""

    dataset = "folder"  # what the checkpoint marker records

    def __init__(
        self,
        data_dir: str = "my_images/",
        classes: list[str | int] | None = None,
        test_size: float = 0.2,
        cache_dir: str | None = None,
        batch_size: int = 32,
        val_size: float = 0.1,
        train_per_class: int | None = None,
        seed: int = 0,
        predict_path: str | None = None,
    ) -> None:
        """
        Args:
            data_dir: The folder that holds ``train/<class>/<image>`` and optionally ``test/<class>/<image>``.
            classes: The class folders to use, by name, in label order (a number names the folder of that name,
                e.g. ``[3, 7]``; ``None``: every class folder of ``train/``, sorted by name).
            test_size: Without a ``test/`` folder: the share of each class's images held out as the test split
                (the same images in every run, whatever the seed).
            cache_dir: Where the decoded images are cached (``None``: ``$XDG_CACHE_HOME/lit_transfer`` or
                ``~/.cache/lit_transfer``).
            batch_size: Images per batch and per device.
            val_size: Fraction of the training images held out for validation (0 disables validation).
            train_per_class: Keep only this many training images per class (``None`` keeps all).
            seed: Seed of the validation split, the label budget and of the per-epoch shuffling.
            predict_path: ``predict`` only: an image file, a folder of images (searched recursively) or a glob;
                ``None`` predicts the test split.
        """
        super().__init__(batch_size, val_size, train_per_class, seed, predict_path)
        if not 0 < test_size < 1:
            raise UserError(f"--data.test_size is {test_size}: give a fraction in (0, 1), e.g. 0.2")
        self.save_hyperparameters()
        self.data_dir = data_dir
        # Lists and decodes nothing until asked (the class names at the latest, for the head's width)
        names = None if classes is None else [str(c) for c in classes]  # YAML reads a folder named 3 as a number
        self.folder = ImageFolderData(data_dir, names, cache_dir, test_size)

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names

    def prepare_data(self) -> None:
        """Check the folder and decode its images into the cache (not needed to predict on files)."""
        if not self.predicting_files:
            self.folder.prepare()

    def read(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        images, labels, files = self.folder.read(split)
        if split == "test":
            self.test_files = files
        return images, labels, torch.arange(len(labels))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={self.data_dir!r})"
