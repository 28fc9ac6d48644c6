"""Image files and folders: how any image becomes the network's 28x28 input, and how files are found and read.

- ``rule.py``: the image rule, any image Pillow reads -> a 28x28 uint8 MNIST-style digit (``load_mnist``).
- ``files.py``: the files ``predict --data.predict_path`` names (a file, a folder or a glob), read in a pool.
- ``folders.py``: an image folder (``train/<class>/*.png``) listed, decoded once and cached on disk.

Nothing here knows Lightning: ``lit_transfer.data.FolderDataModule`` and the base DataModule's predict-on-files
read through these.
"""

from lit_transfer.images.rule import load_mnist, to_mnist

__all__ = ["load_mnist", "to_mnist"]
