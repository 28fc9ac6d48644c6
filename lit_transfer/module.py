"""The LightningModule: the notebook's network, its loss, metrics and optimizer, and transfer from a checkpoint.

Everything else a run does is added from outside as callbacks (``lit_transfer/callbacks/``): the printout, what a
checkpoint records about itself, the NaN watch, and in stage two the frozen backbone's features computed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_transfer.checkpoint import copy_weights
from lit_transfer.errors import UserError
from lit_transfer.model import Backbone, Head, to_input


def keras_adadelta(params: Iterable) -> torch.optim.Optimizer:
    """Adadelta with the original Keras values (lr=1.0, rho=0.95, eps=1e-7); torch's defaults differ."""
    return torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)


class TransferModule(L.LightningModule):
    """The notebook's CNN: ``backbone`` (conv features) and ``head`` (dense classifier)."""

    def __init__(
        self,
        num_classes: int = 5,
        optimizer: OptimizerCallable = keras_adadelta,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        init_from: str | None = None,
        transfer_layers: int | None = None,
        batch_norm: bool = False,
    ) -> None:
        """
        Args:
            num_classes: Outputs of the head; linked from the data's classes (``data.digits``, or a folder's class
                folders) by the command line.
            optimizer: Built in ``configure_optimizers`` from the trainable parameters only.
            lr_scheduler: A learning-rate scheduler for that optimizer (``--model.lr_scheduler StepLR
                --model.lr_scheduler.step_size 1``; ``OneCycleLR`` with ``total_steps`` and interval ``step``).
                Groups that gradual unfreezing adds later keep their own learning rate unless the scheduler
                scales every group (StepLR, ExponentialLR, ... do; OneCycleLR does not).
            lr_scheduler_interval: Step the scheduler after every ``epoch`` or every optimizer ``step``.
            init_from: A lit_transfer checkpoint to start from (transfer, not resume): its backbone is copied,
                and its head too when it has ``num_classes`` outputs. ``fit --ckpt_path`` of another stage's
                checkpoint does the same.
            transfer_layers: Copy only the first n weight layers from ``init_from`` (1 = conv1, 2 = the backbone,
                3 = backbone and first dense layer); the others keep their fresh initialisation. ``None`` copies
                the backbone, and the head too when it fits.
            batch_norm: A BatchNorm after each convolution, as almost every real backbone has (off: the notebook's
                network). ``FreezeFeatures`` keeps a frozen one frozen: evaluation mode, statistics unchanged.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if transfer_layers is not None and not 1 <= transfer_layers <= 4:
            raise UserError(f"--model.transfer_layers is {transfer_layers}: give 1 to 4 (weight layers from the input)")
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.init_from, self.transfer_layers = init_from, transfer_layers
        self.backbone = Backbone(batch_norm)
        self.head = Head(num_classes)
        # Metrics per split, computed once per epoch. torchmetrics needs two classes at least (a single-digit run
        # still gets correct, trivial metrics); validate_args and nan_strategy="disable" avoid a host sync per step.
        n = max(num_classes, 2)
        self.metrics = torch.nn.ModuleDict()
        for split in SPLITS:
            self.metrics[f"{split}_acc"] = MulticlassAccuracy(n, average="micro", validate_args=False)
            self.metrics[f"{split}_loss"] = MeanMetric(nan_strategy="disable")
        self.test_confusion = MulticlassConfusionMatrix(n, validate_args=False)
        self.test_summary: dict | None = None  # per-class accuracy and confusion matrix of the last test
        self.example_input_array = torch.zeros(2, 28, 28, dtype=torch.uint8)  # sizes and FLOPs in the summary

    def forward(self, images: Tensor) -> Tensor:
        """Logits of a batch of uint8 images ``(N, 28, 28)``."""
        return self.head(self.backbone(to_input(images)))

    def logits(self, inputs: Tensor) -> Tensor:
        """Logits of what a batch holds: uint8 images, or (float) the frozen backbone's features of them.

        A frozen backbone's layers before its dropout give the same output in every epoch, so in stage two they
        run once per split and the loader serves their output in place of the images
        (``lit_transfer/callbacks/feature_cache.py``); the rest of the network runs here, as in :meth:`forward`.
        """
        if inputs.dtype == torch.uint8:
            return self(inputs)
        return self.head(self.backbone.from_features(inputs))

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        """The loss and predictions of a batch, counted into the split's epoch metrics."""
        inputs, labels = batch
        logits = self.logits(inputs)
        loss = F.cross_entropy(logits, labels)
        preds = logits.detach().argmax(1)
        self.metrics[f"{split}_acc"].update(preds, labels)
        # A per-image mean, like Keras' evaluate(): the batch mean counted once per image (with nan_strategy
        # "disable", torchmetrics 1.9 ignores ``weight``, so the weighting is spelled out as a broadcast view).
        self.metrics[f"{split}_loss"].update(loss.detach().expand(labels.shape[0]))
        return loss, preds

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, preds = self._step(batch, "train")
        # Training curves for the loggers (TensorBoard) on the steps they write, not on every step: each self.log
        # costs ~2.5 ms of bookkeeping on a CPU step of a few ms (benchmarks/RESULTS.md).
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            acc = (preds == batch[1]).float().mean()
            self.log_dict({"train_loss_step": loss.detach(), "train_acc_step": acc}, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        _, preds = self._step(batch, "test")
        self.test_confusion.update(preds, batch[1])

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Per image: the predicted label (an index into the classes), its probability, the three most probable
        labels and their probabilities, and the batch's label (the true one; an image file's position)."""
        images, labels = batch
        probabilities = self(images).float().softmax(1)
        top_probability, top = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
        return {
            "predicted": top[:, 0],
            "probability": top_probability[:, 0],
            "label": labels,
            "top": top,
            "top_probability": top_probability,
        }

    def _log_epoch(self, split: str) -> dict[str, Tensor]:
        names = (f"{split}_loss", f"{split}_acc")
        values = {name: self.metrics[name].compute() for name in names}
        self.log_dict(values, prog_bar=split != "test")
        for name in names:
            self.metrics[name].reset()
        return values

    def on_train_epoch_end(self) -> None:
        if self.metrics["train_acc"].update_called:  # a training step ran this epoch
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch("test")
        confusion = self.test_confusion.compute().cpu()  # synchronised across processes by torchmetrics
        self.test_confusion.reset()
        k = self.hparams.num_classes
        self.test_summary = {
            "test_loss": values["test_loss"].item(),
            "test_acc": values["test_acc"].item(),
            "per_class_acc": (confusion.diag() / confusion.sum(1).clamp(min=1))[:k].tolist(),
            "confusion": confusion[:k, :k].tolist(),
            "test_images": int(confusion.sum()),
        }

    def configure_optimizers(self) -> Any:
        # Only trainable parameters: FreezeFeatures has already frozen the backbone in its setup() hook.
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler(optimizer), "interval": self.hparams.lr_scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            self.use_layout_for(self.trainer.strategy.root_device)
        if stage == "fit" and self.init_from:
            self.transfer_from(self.init_from)

    def use_layout_for(self, device: torch.device) -> None:
        """The weights' memory layout for ``device``: on the CPU channels-last (NHWC), on which oneDNN's
        convolutions are faster (benchmarks/RESULTS.md); the checkpoint keys and values stay the same, and a GPU run
        keeps torch's default layout."""
        if device.type == "cpu":
            self.backbone.to(memory_format=torch.channels_last)

    def transfer_from(self, path: str) -> None:
        """Copy the backbone (and the head, when it fits) or the first ``transfer_layers`` weight layers of the
        checkpoint at ``path`` into this network (``checkpoint.copy_weights``)."""
        copy_weights(path, self.backbone, self.head, self.transfer_layers)


SPLITS = ("train", "val", "test")
