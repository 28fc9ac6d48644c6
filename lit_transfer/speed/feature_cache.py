"""While the backbone is frozen, train the head on its cached features instead of recomputing them every batch.

A frozen backbone's layers before its dropout compute the same output for an image in every epoch, so they run
once over the training split (and the validation split, while fitting), and the loaders serve those features in
place of the images. Dropout and flatten still run on the fly, so training is the same to the bit
(``tests/test_speed_paths.py``) and costs a fraction of a full step (benchmarks/RESULTS.md). Once the backbone
is unfrozen (gradual unfreezing) the loaders serve images again. ``--speed.feature_cache false`` turns it off.

The module itself knows nothing of this: while fitting, the callback gives it a ``forward`` that runs the head on
cached features (floats) and the whole network on images (uint8), and takes it away again at the end.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_transfer.console import count
from lit_transfer.loader import TensorBatches
from lit_transfer.model import to_input

# Images per backbone pass while caching: small enough for the activations to stay near the cores (256 was 2x
# faster than 2,048 on an AMD EPYC; 64 was 5-13% faster than 256 on a Xeon: benchmarks/feature_pass.py); same values.
CHUNK = 64


class FeatureCache(L.Callback):
    """Added by the command line (``lit_transfer.speed.callbacks``); put it after ``FreezeFeatures``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            # An instance attribute shadows the class's forward for this module only (undone in teardown).
            pl_module.forward = _ForwardOrFromFeatures(pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(pl_module.__dict__.get("forward"), _ForwardOrFromFeatures):
            del pl_module.forward

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After FreezeFeatures' hook (the trainer's callbacks run before the module's), so an unfreezing is seen.
        self._serve(pl_module, "train", trainer.train_dataloader, trainer.num_training_batches)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Fitting only: there the same validation images come back every epoch. Evaluation mode makes the backbone
        # deterministic, so cached validation features give exactly the metrics the images give.
        if trainer.state.fn == "fit" and trainer.num_val_batches:
            self._serve(pl_module, "val", trainer.val_dataloaders, trainer.num_val_batches[0])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for loader in (trainer.train_dataloader, trainer.val_dataloaders):
            if isinstance(loader, TensorBatches):
                loader.serve_images()

    def _serve(self, pl_module: L.LightningModule, split: str, loader: object, batches: float) -> None:
        if not isinstance(loader, TensorBatches):
            return
        frozen = not any(p.requires_grad for p in pl_module.backbone.parameters())
        # Caching costs one backbone pass over the whole split: worth it only when its epochs are not cut short.
        if frozen and not loader.serves_features and batches >= len(loader):
            loader.serve_features(features(pl_module, loader.images))
            n = len(loader.images)
            rank_zero_info(f"lit_transfer: backbone frozen: its features of {count(n, split + ' image')} are cached")
        elif not frozen:
            loader.serve_images()


@torch.no_grad()
def features(pl_module: L.LightningModule, images: Tensor) -> Tensor:
    """The backbone's deterministic layers over ``images``, chunk by chunk, into one preallocated tensor (a list of
    chunks and their concatenation would hold the cache twice for a moment, which was the run's peak memory)."""
    cache = None
    with pl_module.trainer.precision_plugin.forward_context():
        for start in range(0, len(images), CHUNK):
            chunk = pl_module.backbone.features(to_input(images[start : start + CHUNK]))
            if cache is None:
                cache = torch.empty((len(images), *chunk.shape[1:]), device=chunk.device)  # float32 under autocast too
            cache[start : start + len(chunk)] = chunk
    return cache


class _ForwardOrFromFeatures:
    """The module's own forward for images (uint8), and for cached features (floats) the rest of the network."""

    def __init__(self, module: L.LightningModule) -> None:
        self.module = module

    def __call__(self, inputs: Tensor) -> Tensor:
        module = self.module
        if inputs.dtype == torch.uint8:
            return type(module).forward(module, inputs)
        return module.head(module.backbone.from_features(inputs))
