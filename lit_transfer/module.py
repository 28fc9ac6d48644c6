"""The LightningModule: the notebook's backbone + head, its loss and metrics, and transfer from a checkpoint."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_transfer.checkpoint import FORMAT, MARKER, class_names, frozen_stage, load_checkpoint, require_ours
from lit_transfer.console import count
from lit_transfer.divergence import LossWatch
from lit_transfer.errors import UserError
from lit_transfer.model import WEIGHT_LAYERS, Backbone, Head, count_params, weight_layers
from lit_transfer.speed.cuda_graphs import CudaGraphSteps
from lit_transfer.speed.epoch_sums import EpochSums
from lit_transfer.speed.feature_cache import FeatureCache
from lit_transfer.speed.layers import to_fast_cpu_layers


def keras_adadelta(params: Iterable) -> torch.optim.Optimizer:
    """Adadelta with the original Keras values (lr=1.0, rho=0.95, eps=1e-7); torch's defaults differ."""
    return torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)


class TransferModule(CudaGraphSteps, L.LightningModule):
    """The notebook's CNN: ``backbone`` (conv features) and ``head`` (dense classifier)."""

    def __init__(
        self,
        num_classes: int = 5,
        optimizer: OptimizerCallable = keras_adadelta,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        init_from: str | None = None,
        transfer_layers: int | None = None,
        cache_features: bool = True,
        cuda_graph: bool = True,
        graph_whole_step: bool = False,
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
            cache_features: While the backbone is frozen, compute its deterministic part once per split (training
                and validation) and run the head on the cached output (dropout still applied on the fly while
                training); same result, less work.
            cuda_graph: On one CUDA device with 32-bit precision, replay each full training batch's forward and
                backward as CUDA graphs (loss, optimizer and Lightning's loop unchanged); elsewhere, or when false,
                the usual eager step.
            graph_whole_step: With ``cuda_graph``, replay the whole training step of each full batch (forward,
                loss, backward, the optimizer's update, the training metrics) as one CUDA graph, where no gradient
                clipping, LR scheduler or ``on_before_optimizer_step`` callback needs Lightning's own update.
                Experimental: tested on the CPU with a stand-in capture, not yet run on a GPU.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        if transfer_layers is not None and not 1 <= transfer_layers <= 4:
            raise UserError(f"--model.transfer_layers is {transfer_layers}: give 1 to 4 (weight layers from the input)")
        self.init_from, self.transfer_layers, self.cache_features = init_from, transfer_layers, cache_features
        self.cuda_graph, self.graph_whole_step = cuda_graph, graph_whole_step
        self.backbone = Backbone()
        self.head = Head(num_classes)
        # torchmetrics needs two classes at least; a single-digit run still gets correct (trivial) metrics.
        n = max(num_classes, 2)
        metric = dict(num_classes=n, average="micro", validate_args=False)  # no host sync per step
        self.val_acc, self.test_acc = (MulticlassAccuracy(**metric) for _ in range(2))
        # nan_strategy="disable": the default ("warn") tests for NaN with a host sync on every update, which stalls
        # the GPU once per step. A NaN validation loss shows as NaN.
        self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(2))
        self.train_sums = EpochSums()  # training loss and accuracy (not torchmetrics: see speed/epoch_sums.py)
        self.test_confusion = MulticlassConfusionMatrix(n, validate_args=False)
        self.test_summary: dict | None = None
        self.loaded_meta: dict[str, Any] = {}  # the lit_transfer marker of the checkpoint last loaded
        self.loss_watch = LossWatch()
        self.example_input_array = torch.zeros(2, 28, 28, dtype=torch.uint8)  # sizes and FLOPs in the summary

    # --- the network -----------------------------------------------------------------------------------
    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``(N, 28, 28)`` -> float ``(N, 1, 28, 28)`` in [0, 1], on whatever device the batch is on."""
        x = images.unsqueeze(1).float().div_(255)
        # in the backbone's memory layout (channels-last where the fast CPU layers are in)
        if self.backbone.conv2.weight.is_contiguous(memory_format=torch.channels_last):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(self.normalize(images)))

    def logits(self, inputs: Tensor) -> Tensor:
        """Logits of a batch of uint8 images, or of the frozen backbone's cached features (floats, served by
        ``FeatureCache`` in their place)."""
        if inputs.dtype == torch.uint8:
            return self(inputs)
        return self.head(self.backbone.from_features(inputs))

    # --- steps -----------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        replayed = self.replay_step(inputs, labels)  # the whole step from a CUDA graph (speed/cuda_graphs.py)
        if replayed is not None:
            return replayed
        return self.training_loss(self.training_logits(inputs), labels)

    def training_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss, counted into the epoch's training metrics and watched for NaN."""
        loss = F.cross_entropy(logits, labels)
        self.train_sums.update(logits.detach(), labels, loss)
        self.loss_watch.update(loss, self.trainer)
        # Training curves for the loggers (TensorBoard) every log_every_n_steps steps, on the steps Lightning
        # writes: each self.log costs a device-to-host copy and ~2.5 ms of bookkeeping, so not on the others.
        if self.trainer._logger_connector.should_update_logs and not torch.compiler.is_compiling():
            acc = (logits.detach().argmax(1) == labels).float().mean()
            self.log_dict({"train_loss_step": loss.detach(), "train_acc_step": acc}, on_step=True, on_epoch=False)
        return loss

    @staticmethod
    def _record(logits: Tensor, labels: Tensor, acc: MulticlassAccuracy, mean_loss: MeanMetric) -> Tensor:
        """Update a split's metrics; returns the predictions."""
        preds = logits.argmax(1)
        acc.update(preds, labels)
        # A per-image mean, like Keras' evaluate(): the batch mean counted once per image. (With nan_strategy
        # "disable", torchmetrics 1.9 ignores ``weight``, so the weighting is spelled out as a broadcast view.)
        mean_loss.update(F.cross_entropy(logits, labels).detach().expand(labels.shape[0]))
        return preds

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        self._record(self.logits(inputs), labels, self.val_acc, self.val_loss)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        preds = self._record(self.logits(inputs), labels, self.test_acc, self.test_loss)
        self.test_confusion.update(preds, labels)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Per image: the predicted label (an index into the classes), its probability, the three most probable
        labels and their probabilities, and the batch's label (the true one; an image file's position)."""
        inputs, labels = batch
        probabilities = self.logits(inputs).float().softmax(1)
        top_probability, top = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
        return {
            "predicted": top[:, 0],
            "probability": top_probability[:, 0],
            "label": labels,
            "top": top,
            "top_probability": top_probability,
        }

    # --- epoch metrics -----------------------------------------------------------------------------------
    # Computed and logged once per epoch rather than ``self.log`` of the metric objects in every step: each
    # ``self.log`` call moves Lightning's whole result collection to the device (benchmarks/RESULTS.md).
    def on_train_epoch_end(self) -> None:
        self.loss_watch.check(self.trainer)
        if self.train_sums.sums is None:  # no training step ran
            return
        loss, acc = self.train_sums.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        self.log_dict({"train_loss": loss, "train_acc": acc}, prog_bar=True)
        self.train_sums.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val_loss": self.val_loss.compute(), "val_acc": self.val_acc.compute()}, prog_bar=True)
        self.val_loss.reset()
        self.val_acc.reset()

    def on_test_epoch_end(self) -> None:
        loss, acc = self.test_loss.compute(), self.test_acc.compute()
        confusion = self.test_confusion.compute().cpu()  # synchronised across processes by torchmetrics
        self.log("test_loss", loss)
        self.log("test_acc", acc)
        k = self.hparams.num_classes
        per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
        self.test_summary = {
            "test_loss": loss.item(),
            "test_acc": acc.item(),
            "per_class_acc": per_class[:k].tolist(),
            "confusion": confusion[:k, :k].tolist(),
            "test_images": int(confusion.sum()),
        }
        for metric in (self.test_loss, self.test_acc, self.test_confusion):
            metric.reset()

    def configure_optimizers(self) -> Any:
        # Only trainable parameters: FreezeFeatures has already frozen the backbone in its setup() hook.
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler(optimizer), "interval": self.hparams.lr_scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def configure_callbacks(self) -> list[L.Callback]:
        present = any(isinstance(cb, FeatureCache) for cb in self.trainer.callbacks)  # e.g. test after fit
        return [FeatureCache()] if self.cache_features and not present else []

    # --- setup and transfer ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "cpu":
            to_fast_cpu_layers(self)  # same values and gradients, faster on the CPU (speed/layers.py)
        if stage == "fit" and self.init_from:
            self.transfer_from(self.init_from)

    def transfer_from(self, path: str) -> None:
        """Copy the backbone (and the head, when it fits) or the first ``transfer_layers`` weight layers."""
        checkpoint = load_checkpoint(path)
        meta = require_ours(checkpoint, path)
        # The source network as it was trained (its own head width), loaded strictly: any missing or misshapen
        # layer means another architecture.
        source = nn.ModuleDict({"backbone": Backbone(), "head": Head(meta.get("num_classes") or 0)})
        weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("backbone.", "head."))}
        try:
            source.load_state_dict(weights)
        except RuntimeError:
            raise UserError(
                f"the weights in {path} do not fit this model (different layers or shapes): "
                "transfer from a checkpoint of this model's architecture"
            ) from None
        pairs = list(
            zip(weight_layers(source.backbone, source.head), weight_layers(self.backbone, self.head), strict=True)
        )
        if self.transfer_layers is not None:
            pairs = pairs[: self.transfer_layers]
        copied = []
        for i, (src, dst) in enumerate(pairs):
            if src.weight.shape == dst.weight.shape:
                dst.load_state_dict(src.state_dict())
                copied.append(WEIGHT_LAYERS[i])
            elif i < 2 or self.transfer_layers is not None:  # the backbone must fit; so must layers asked for
                raise UserError(f"layer {i + 1} in {path} has another shape than this model's: transfer fewer layers")
        note = ", ".join(copied)
        if len(copied) < 4 and self.transfer_layers is None:
            note += (
                f"; its head has {count(meta.get('num_classes'), 'class', 'classes')} and this model "
                f"{self.hparams.num_classes}, "
                "so the last layer is newly initialised"
            )
        rank_zero_info(f"lit_transfer: transferred {note} from {path} (classes {', '.join(class_names(meta))})")

    @property
    def checkpoint_classes(self) -> list[str]:
        """The class names of the checkpoint loaded, if any: what predict calls the outputs."""
        return class_names(self.loaded_meta)

    # --- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.loss_watch.check(self.trainer)  # raising here keeps the bad weights out of the checkpoint file
        datamodule = self.trainer.datamodule
        checkpoint[MARKER] = {
            "format": FORMAT,
            "dataset": getattr(datamodule, "dataset", None),
            "digits": list(getattr(datamodule, "digits", [])),
            "num_classes": self.hparams.num_classes,
            "frozen_stage": frozen_stage(self.trainer),
            **{k: v for k, v in count_params(self).items() if k != "total_params"},
        }
        if getattr(datamodule, "dataset", None) == "folder":  # the real names, in label order (no digits)
            checkpoint[MARKER].update(classes=list(datamodule.class_names), digits=[])
        # Lightning does not store the global RNG; dropout draws from it, so an exact resume needs it.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loaded_meta = dict(checkpoint.get(MARKER) or {})
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
