"""Lightning callbacks: everything a run adds around the lesson, one behaviour per file.

``run_callbacks`` is the one place a run's callbacks are put together: the command line, the notebook and the demo's
Teach tab all take theirs from it. ``FreezeFeatures``, the lesson's own callback, lives at the top of the package
(``lit_transfer/freeze.py``). A new callback is a file here and, if every run needs it, a line in ``run_callbacks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Timer

from lit_transfer.callbacks.feature_cache import FeatureCache
from lit_transfer.callbacks.interrupt import Interrupt
from lit_transfer.callbacks.loss_watch import LossWatch
from lit_transfer.callbacks.marker import CheckpointMarker
from lit_transfer.callbacks.predictions import PredictionCSV
from lit_transfer.callbacks.progress import ProgressBar
from lit_transfer.callbacks.stage_report import StageReport

__all__ = [
    "CheckpointMarker",
    "FeatureCache",
    "Interrupt",
    "LossWatch",
    "PredictionCSV",
    "ProgressBar",
    "StageReport",
    "run_callbacks",
]


def run_callbacks(
    own: Sequence[L.Callback] = (), feature_cache: bool = True, command_line: Sequence[str] | None = None
) -> list[L.Callback]:
    """A run's callbacks in the order they must run: ``own`` first, then what every run adds.

    Every run: ``CheckpointMarker`` (what a checkpoint was trained on, and the RNG state), ``LossWatch`` (stop on a
    NaN loss) and, unless ``feature_cache`` is off, ``FeatureCache``, which comes after ``own`` because it must see
    what a ``FreezeFeatures`` there froze or unfroze at the same epoch start. A command-line run (``command_line``:
    its arguments) also gets the training time, the stage's printout and ``results.json``, predict's CSV, the
    progress bar and the Ctrl-C handler that prints the command to resume with.

    Args:
        own: The run's own callbacks (``FreezeFeatures`` in stage two). LightningCLI puts the config's
            ``--trainer.callbacks`` first by itself, so the command line passes none here.
        feature_cache: Train a frozen backbone's head on its features computed once per split.
        command_line: The command line's arguments, for a run started by ``python -m lit_transfer``.
    """
    callbacks = [*own]
    if command_line is not None:
        callbacks += [Timer(), StageReport(), PredictionCSV(), ProgressBar(), Interrupt(list(command_line))]
    callbacks += [CheckpointMarker(), LossWatch()]
    if feature_cache:
        callbacks.append(FeatureCache())
    return callbacks
