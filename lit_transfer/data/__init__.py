"""The DataModules, one per kind of data, over a small shared base (chosen with ``--data ClassName``).

- ``base.py``: ``ImagesDataModule``, what they share: each split read once into uint8 tensors, a fixed validation
  split, a label budget, batches drawn by index, predict on image files.
- ``digits.py``: ``DigitsDataModule``, MNIST, Fashion-MNIST or KMNIST filtered to chosen digits (the notebook's).
- ``folders.py``: ``FolderDataModule``, a folder of your own images (``train/<class>/*.png``).
- ``loader.py``: ``TensorBatches``, batches drawn by index from tensors already on the device; it serves a frozen
  backbone's cached features instead of images when the feature cache asks it to.

A new kind of data is a new ``ImagesDataModule`` subclass here with ``dataset``, ``class_names`` and ``read``.
"""

from lit_transfer.data.base import ImagesDataModule
from lit_transfer.data.digits import DigitsDataModule
from lit_transfer.data.folders import FolderDataModule

__all__ = ["DigitsDataModule", "FolderDataModule", "ImagesDataModule"]
