"""lit_transfer: pretrain on some digits, freeze the features, retrain the head on others."""

from lit_transfer.callbacks import FreezeFeatures, StageReport
from lit_transfer.checkpoint import CheckpointMarker
from lit_transfer.data import DigitsDataModule, ImagesDataModule
from lit_transfer.folder_data import FolderDataModule
from lit_transfer.model import Backbone, Head
from lit_transfer.module import TransferModule

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
