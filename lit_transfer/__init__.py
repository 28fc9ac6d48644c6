"""lit_transfer: pretrain on some digits, freeze the features, retrain the head on others."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The package's names, imported on first use (PEP 562) rather than with the package: ``python -m lit_transfer`` checks
# the install (command_line/setup_check.py) before anything imports torchvision, whose mismatch with torch would
# otherwise end in a long traceback at the first import.
_EXPORTS = {
    "Backbone": "lit_transfer.model",
    "CheckpointMarker": "lit_transfer.callbacks",
    "DigitsDataModule": "lit_transfer.data",
    "FolderDataModule": "lit_transfer.data",
    "FreezeFeatures": "lit_transfer.freeze",
    "Head": "lit_transfer.model",
    "ImagesDataModule": "lit_transfer.data",
    "StageReport": "lit_transfer.callbacks",
    "TransferModule": "lit_transfer.module",
}
__all__ = [
    "Backbone",
    "CheckpointMarker",
    "DigitsDataModule",
    "FolderDataModule",
    "FreezeFeatures",
    "Head",
    "ImagesDataModule",
    "StageReport",
    "TransferModule",
]

if TYPE_CHECKING:
    from lit_transfer.callbacks import CheckpointMarker, StageReport
    from lit_transfer.data import DigitsDataModule, FolderDataModule, ImagesDataModule
    from lit_transfer.freeze import FreezeFeatures
    from lit_transfer.model import Backbone, Head
    from lit_transfer.module import TransferModule


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_transfer' has no attribute {name!r}")
