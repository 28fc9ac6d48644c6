"""While the backbone is frozen, train the head on its cached features instead of recomputing them every batch.

A frozen backbone's layers before its dropout compute the same output for an image in every epoch, so they run
once over the training split (and the validation split, while fitting), and the loaders serve those features in
place of the images. The dropout still runs on the fly, so training is the same to the bit
(``tests/test_speed_paths.py``) and costs a fraction of a full step (benchmarks/RESULTS.md). Once the backbone
is unfrozen (gradual unfreezing) the loaders serve images again. ``--speed.feature_cache false`` turns it off.

What changes is only what the loop is given: batches of features (floats) instead of images (uint8), for which
``TransferModule.logits`` runs the rest of the network. The module's layers and ``forward`` stay as they are.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_transfer.data.loader import TensorBatches
from lit_transfer.errors import count
from lit_transfer.model import to_input

# Images per backbone pass while caching: small enough for the activations to stay near the cores (256 was 2x
# faster than 2,048 on an AMD EPYC; 64 was 5-13% faster than 256 on a Xeon: benchmarks/RESULTS.md); same values.
CHUNK = 64


class FeatureCache(L.Callback):
    """Serves a frozen backbone's features in place of the images (``lit_transfer.callbacks.run_callbacks`` adds it
    after the run's own callbacks: it must see what ``FreezeFeatures`` froze or unfroze at the same epoch start)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After FreezeFeatures' hook (run_callbacks puts this callback after the run's own), so an unfreezing is seen.
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
        backbone = pl_module.backbone
        # Frozen: no weight trains and no BatchNorm normalises by its batch (its output then depends on the batch).
        frozen = not any(p.requires_grad for p in backbone.parameters()) and not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in backbone.modules()
        )
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
