"""Lightning callbacks: stage two's frozen backbone, each stage's report, predict's CSV."""

from lit_transfer.callbacks.freeze import FreezeFeatures
from lit_transfer.callbacks.predictions import PredictionCSV
from lit_transfer.callbacks.stage_report import StageReport

__all__ = ["FreezeFeatures", "PredictionCSV", "StageReport"]
