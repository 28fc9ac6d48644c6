"""``CheckpointMarker``: what a checkpoint was trained on, and the RNG state an exact resume needs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lit_transfer.checkpoint import FORMAT, MARKER, frozen_stage
from lit_transfer.model import count_params


class CheckpointMarker(L.Callback):
    """Writes ``checkpoint[MARKER]`` (what the checkpoint was trained on) and the global RNG state into every
    checkpoint, and restores the RNG state when one is loaded; ``loaded`` is the marker of the checkpoint loaded
    last (``loaded_marker(trainer)``), e.g. the classes ``predict`` names its outputs by."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        data = trainer.datamodule
        dataset = getattr(data, "dataset", None)
        checkpoint[MARKER] = {
            "format": FORMAT,
            "dataset": dataset,
            "digits": list(getattr(data, "digits", None) or []),
            "num_classes": pl_module.hparams.num_classes,
            "frozen_stage": frozen_stage(trainer),
            **{k: v for k, v in count_params(pl_module).items() if k != "total_params"},
        }
        if dataset == "folder":  # the real names, in label order (no digits)
            checkpoint[MARKER].update(classes=list(data.class_names), digits=[])
        # Lightning does not store the global RNG; dropout draws from it, so an exact resume needs it.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if pl_module.device.type == "cuda":
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state(pl_module.device)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.loaded = dict(checkpoint.get(MARKER) or {})
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and pl_module.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), pl_module.device)


def loaded_marker(trainer: L.Trainer) -> dict[str, Any]:
    """The marker of the checkpoint this trainer loaded (``{}``: none, or no ``CheckpointMarker``)."""
    return next((cb.loaded for cb in trainer.callbacks if isinstance(cb, CheckpointMarker)), {})
