"""Callbacks that let a test see inside a real CLI run (loaded via PYTHONPATH=tests or pytest's rootdir)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class RecordTrainSums(L.Callback):
    """Before the module's metrics reduce them across processes (callbacks' epoch-end hooks run before the
    module's), write each rank's own training sums of the epoch ([correct, loss * images, images], read from the
    torchmetrics states) to ``<folder>/sums-rank<r>-epoch<e>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"sums-rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        acc, loss = pl_module.metrics["train_acc"], pl_module.metrics["train_loss"]
        sums = [acc.tp.sum().item(), loss.mean_value.item(), loss.weight.item()]
        (self.folder / name).write_text(json.dumps(sums))


class RecordDtypes(L.Callback):
    """Write the dtype of the first dense layer's output in each training step to ``<folder>/dtypes.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.head.fc1.register_forward_hook(lambda module, args, out: self.seen.append(str(out.dtype)))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "dtypes.json").write_text(json.dumps(self.seen))


def autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu")


class DeferLossChecks(L.Callback):
    """The NaN watch as on an accelerator, in a real CLI run on the CPU: the first bad step recorded on the device
    and checked at checkpoints and epoch ends, not every step (``--trainer.callbacks+=probes.DeferLossChecks``)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lit_transfer.callbacks import LossWatch

        for watch in (cb for cb in trainer.callbacks if isinstance(cb, LossWatch)):
            watch.defer = lambda loss: True
