"""The LightningModule: backbone + head, the loss, the metrics, transfer from a checkpoint, feature caching."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_transfer.callbacks import frozen_stage
from lit_transfer.checkpoint import FORMAT, MARKER, load_checkpoint, require_ours
from lit_transfer.cpu import tune_cpu
from lit_transfer.epoch_sums import EpochSums
from lit_transfer.errors import TrainingDiverged, UserError
from lit_transfer.graphs import GraphedForward, graph_cuda
from lit_transfer.loader import TensorBatches
from lit_transfer.model import FEATURE_SHAPE, Backbone, Head, weight_layers
from lit_transfer.step_graph import StepGraph, capture_cuda, make_capturable

CACHE_CHUNK = 256  # images per forward pass when caching frozen features: cache-friendly, 2x faster than 2048


GRAPH_FN = graph_cuda  # the tests swap in a stand-in to check the graphed path's logic on the CPU
STEP_CAPTURE = capture_cuda  # likewise for the whole-step graph


def graphs_safe(trainer: L.Trainer) -> bool:
    """CUDA graphs where they are known to be exact: one CUDA device, fp32 (autocast's cache cannot be graphed),
    no gradient accumulation. The graphed backward's gradients live in the graph's buffers, which the next replay
    overwrites: they must be consumed by the optimizer step that follows, and reset by Lightning's default
    ``zero_grad`` (to None) rather than accumulated into."""
    return (
        trainer.strategy.root_device.type == "cuda"
        and trainer.world_size == 1
        and str(trainer.precision) == "32-true"
        and trainer.accumulate_grad_batches == 1
    )


def whole_step_unsafe(trainer: L.Trainer) -> str | None:
    """Why the whole training step cannot be one graph under this trainer (None: it can). On a replayed batch
    Lightning's ``optimizer.step`` does not run, so nothing may need to act between backward and the update."""
    if trainer.gradient_clip_val:
        return "gradient clipping is set"
    if trainer.lr_scheduler_configs:
        return "an LR scheduler is configured (a graph holds the learning rate as a constant)"
    if len(trainer.optimizers) != 1:
        return "there is more than one optimizer"
    if "capturable" not in trainer.optimizers[0].defaults:
        return f"{type(trainer.optimizers[0]).__name__} has no capturable mode"
    hooked = [
        type(cb).__name__ for cb in trainer.callbacks if is_overridden("on_before_optimizer_step", cb, L.Callback)
    ]
    if hooked:
        return f"{', '.join(hooked)} acts before each optimizer step"
    return None


def keras_adadelta(params: Iterable) -> torch.optim.Optimizer:
    """Adadelta with the original Keras values (lr=1.0, rho=0.95, eps=1e-7); torch's defaults differ."""
    return torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)


class TransferModule(L.LightningModule):
    """The notebook's CNN: ``backbone`` (conv features) and ``head`` (dense classifier)."""

    def __init__(
        self,
        num_classes: int = 5,
        optimizer: OptimizerCallable = keras_adadelta,
        init_from: str | None = None,
        transfer_layers: int | None = None,
        cache_features: bool = True,
        cuda_graph: bool = True,
        graph_whole_step: bool = False,
    ) -> None:
        """
        Args:
            num_classes: Outputs of the head; linked from ``data.digits`` by the command line.
            optimizer: Built in ``configure_optimizers`` from the trainable parameters only.
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
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        if transfer_layers is not None and not 1 <= transfer_layers <= 4:
            raise UserError(f"--model.transfer_layers is {transfer_layers}: give 1 to 4 (weight layers from the input)")
        self.init_from, self.transfer_layers, self.cache_features = init_from, transfer_layers, cache_features
        self.cuda_graph, self.graph_whole_step = cuda_graph, graph_whole_step
        self._graphed: GraphedForward | None = None
        self._step_graph: StepGraph | None = None
        self._replay_batch = False  # this training batch is one whole-step graph replay (decided at its start)
        self.graph_replays = 0  # training batches run as graph replays, added up when training ends (tests)
        self.backbone = Backbone()
        self.head = Head(num_classes)
        # torchmetrics needs two classes at least; a single-digit run still gets correct (trivial) metrics.
        n = max(num_classes, 2)
        metric = dict(num_classes=n, average="micro", validate_args=False)  # no host sync per step
        self.val_acc, self.test_acc = (MulticlassAccuracy(**metric) for _ in range(2))
        # nan_strategy="disable": the default ("warn") tests for NaN with a host sync on every update, which stalls
        # the GPU once per step. A NaN validation loss shows as NaN.
        self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(2))
        self.train_sums = EpochSums()  # training loss and accuracy (not torchmetrics: see epoch_sums.py)
        self.test_confusion = MulticlassConfusionMatrix(n, validate_args=False)
        self.test_summary: dict | None = None
        self._images: dict[str, Tensor] = {}  # a loader's images while it serves cached features, by split
        # On accelerators: the first step with a non-finite loss, and the current step, as device scalars
        self._bad_step: Tensor | None = None
        self._step_now: Tensor | None = None

    # --- computation -------------------------------------------------------------------------------
    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``(N, 28, 28)`` -> float ``(N, 1, 28, 28)`` in [0, 1], on whatever device the batch is on."""
        return self._layout(images.unsqueeze(1).float().div_(255))

    def _layout(self, x: Tensor) -> Tensor:
        """Images in the backbone's memory layout (channels-last on the CPU)."""
        # conv2's weight tells the layout (conv1's single input channel fits both)
        if self.backbone[2].weight.is_contiguous(memory_format=torch.channels_last):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(self.normalize(images)))

    def _logits(self, inputs: Tensor) -> Tensor:
        if self._graphed is not None and self.training and torch.is_grad_enabled():
            return self._graphed(inputs)
        return self._eager_logits(inputs)

    def _eager_logits(self, inputs: Tensor) -> Tensor:
        # Batches are images (N, 28, 28), or cached pooled features (N, 32, 12, 12) while the backbone is frozen.
        if inputs.dim() == 4:
            return self.head(self.backbone.from_pooled(inputs))
        return self(inputs)

    @staticmethod
    def _record(logits: Tensor, labels: Tensor, loss: Tensor, acc: MulticlassAccuracy, mean_loss: MeanMetric) -> Tensor:
        """Update a split's metrics; returns the predictions."""
        preds = logits.argmax(1)
        acc.update(preds, labels)
        # A per-image mean, like Keras' evaluate(): the batch mean counted once per image. (With nan_strategy
        # "disable", torchmetrics 1.9 ignores ``weight``, so the weighting is spelled out as a broadcast view.)
        mean_loss.update(loss.detach().expand(labels.shape[0]))
        return preds

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        if self._replay_batch:
            return self._step_graph(inputs, labels)
        return self._training_loss(self._logits(inputs), labels)

    def _training_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss, counted into the epoch's training metrics and watched for NaN: the same in both step paths."""
        loss = F.cross_entropy(logits, labels)
        self.train_sums.update(logits.detach(), labels, loss)
        self._watch_finite(loss)
        return loss

    def _whole_step(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """What one whole-step graph holds: Lightning's automatic step (zero_grad, training_step, backward,
        optimizer.step) in the same order, with the gradients zeroed in place rather than set to None."""
        optimizer = self.trainer.optimizers[0]
        optimizer.zero_grad(set_to_none=False)
        loss = self._training_loss(self._eager_logits(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def _warm_up(self, inputs: Tensor, labels: Tensor) -> None:
        """Forward and backward without touching a parameter, a gradient or the optimizer (before a capture)."""
        loss = F.cross_entropy(self._eager_logits(inputs), labels)
        torch.autograd.grad(loss, [p for p in self.parameters() if p.requires_grad])

    def _step_kind(self, inputs: Tensor) -> Hashable:
        """What a whole-step graph is valid for: the input, which parameters train, the optimizer's settings."""
        groups = tuple(
            (len(g["params"]), *sorted((k, v) for k, v in g.items() if isinstance(v, (bool, int, float))))
            for g in self.trainer.optimizers[0].param_groups
        )
        return tuple(inputs.shape), inputs.dtype, tuple(p.requires_grad for p in self.parameters()), groups

    # Lightning's automatic optimization, with the whole step replayed from a graph on the batches that allow it:
    # the closure still runs (training_step replays), zero_grad and backward are skipped, optimizer.step too.
    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._replay_batch = self._step_graph is not None and self._step_graph.will_replay(batch[0])
        if self._step_now is not None:
            self._step_now.fill_(self.global_step)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        if self._replay_batch:
            optimizer_closure()
            return
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        if self._replay_batch:
            return
        # While whole-step graphs replay, the gradients keep the addresses the graphs write to: zeroed in place.
        optimizer.zero_grad(set_to_none=self._step_graph is None)

    def backward(self, loss: Tensor, *args, **kwargs) -> None:
        if not self._replay_batch:
            super().backward(loss, *args, **kwargs)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        logits = self._logits(inputs)
        self._record(logits, labels, F.cross_entropy(logits, labels), self.val_acc, self.val_loss)

    def _log_train_epoch(self) -> None:
        if self.train_sums.sums is None:  # no training step ran
            return
        loss, acc = self.train_sums.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        self.log_dict({"train_loss": loss, "train_acc": acc}, prog_bar=True)
        self.train_sums.reset()

    def _log_epoch(self, split: str, loss: MeanMetric, acc: MulticlassAccuracy) -> None:
        """Log a split's epoch metrics (``compute`` syncs them across processes) and start the next epoch afresh.

        Once per epoch rather than ``self.log`` of the metric objects in every step: each ``self.log`` call moves
        Lightning's whole result collection to the device, ~2.5 ms of a 13 ms stage-two step on the CPU
        (benchmarks/RESULTS.md), for metrics it computes once per epoch anyway."""
        self.log_dict({f"{split}_loss": loss.compute(), f"{split}_acc": acc.compute()}, prog_bar=True)
        loss.reset()
        acc.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        logits = self._logits(inputs)
        preds = self._record(logits, labels, F.cross_entropy(logits, labels), self.test_acc, self.test_loss)
        self.test_confusion.update(preds, labels)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Per image: the predicted label (an index into ``data.digits``), its probability, the true label."""
        inputs, labels = batch
        probability, predicted = self._logits(inputs).float().softmax(1).max(1)
        return {"predicted": predicted, "probability": probability, "label": labels}

    def on_test_epoch_end(self) -> None:
        loss, acc = self.test_loss.compute(), self.test_acc.compute()
        confusion = self.test_confusion.compute().cpu()  # synchronised across processes by torchmetrics
        self.log("test_loss", loss)
        self.log("test_acc", acc)
        per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
        self.test_summary = {
            "test_loss": loss.item(),
            "test_acc": acc.item(),
            "per_class_acc": per_class[: self.hparams.num_classes].tolist(),
            "confusion": confusion[: self.hparams.num_classes, : self.hparams.num_classes].tolist(),
            "test_images": int(confusion.sum()),
        }
        for metric in (self.test_loss, self.test_acc, self.test_confusion):
            metric.reset()

    def _watch_finite(self, loss: Tensor) -> None:
        """Stop on a NaN/inf loss, naming the step. Free to check on the CPU; on an accelerator the first bad
        step is recorded on the device and checked before each checkpoint and at each epoch end (no per-step sync),
        so a checkpoint written after the loss went bad never replaces the last good one."""
        if not self._defers_checks(loss):
            if not torch.isfinite(loss):
                self._diverged(self.global_step, loss.item())
            return
        if self._bad_step is None or self._bad_step.device != loss.device:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._step_now = torch.full((), self.global_step, dtype=torch.long, device=loss.device)
        # In place, with the step as a device scalar (set before each batch), so that a graph can hold this too.
        bad = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step.copy_(torch.where(bad, self._step_now, self._bad_step))

    @staticmethod
    def _defers_checks(loss: Tensor) -> bool:
        """Whether a loss is checked later (on accelerators: reading it would wait for the device)."""
        return loss.device.type != "cpu"

    def _check_finite(self) -> None:
        if self._bad_step is not None and (step := int(self._bad_step)) >= 0:
            self._diverged(step, float("nan"))

    def _diverged(self, step: int, value: float) -> None:
        last = [cb.last_model_path for cb in self.trainer.checkpoint_callbacks if cb.last_model_path]
        kept = f"the last good checkpoint is {last[0]}" if last else "no checkpoint had been written yet"
        raise TrainingDiverged(
            f"the training loss became {value} at step {step} (epoch {self.current_epoch}); training stopped and "
            f"{kept}: lower the learning rate (--model.optimizer.lr) or check the data"
        )

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        self._log_train_epoch()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Only trainable parameters: FreezeFeatures has already frozen the backbone in its setup() hook.
        return self.optimizer([p for p in self.parameters() if p.requires_grad])

    # --- setup, transfer, caching --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "cpu":
            tune_cpu(processes=self.trainer.num_devices)
            # oneDNN's convolutions run ~15% faster on channels-last (NHWC) tensors on the CPU (measured)
            self.backbone.to(memory_format=torch.channels_last)
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
                copied.append(i)
            elif i < 2 or self.transfer_layers is not None:  # the backbone must fit; so must layers asked for
                raise UserError(f"layer {i + 1} in {path} has another shape than this model's: transfer fewer layers")
        names = ["conv1", "conv2", "fc1", "fc2"]
        note = ", ".join(names[i] for i in copied)
        if len(copied) < 4 and self.transfer_layers is None:
            note += (
                f"; its head has {meta.get('num_classes')} classes and this model {self.hparams.num_classes}, "
                "so the last layer is newly initialised"
            )
        rank_zero_info(f"lit_transfer: transferred {note} from {path} (digits {meta.get('digits')})")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._check_finite()  # raising here keeps the bad weights out of the checkpoint file
        datamodule = self.trainer.datamodule
        checkpoint[MARKER] = {
            "format": FORMAT,
            "dataset": getattr(datamodule, "dataset", None),
            "digits": list(getattr(datamodule, "digits", [])),
            "num_classes": self.hparams.num_classes,
            "frozen_stage": frozen_stage(self.trainer),
        }
        # Lightning does not store the global RNG; dropout draws from it, so an exact resume needs it.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)

    def on_train_epoch_start(self) -> None:
        self._serve_features("train", self.trainer.train_dataloader, self.trainer.num_training_batches)
        if self._step_graph is not None and self.device.type == "cuda":
            make_capturable(self.trainer.optimizers[0])  # also a group FreezeFeatures has just added

    def on_validation_epoch_start(self) -> None:
        # Fitting only: there the same validation images come back every epoch. Evaluation mode makes the backbone
        # deterministic, so cached validation features give exactly the metrics the images give.
        if self.trainer.state.fn == "fit" and self.trainer.num_val_batches:
            self._serve_features("val", self.trainer.val_dataloaders, self.trainer.num_val_batches[0])

    def _serve_features(self, split: str, loader: object, batches: float) -> None:
        """While the backbone is frozen, ``loader`` serves its images' cached features; unfrozen, images again."""
        if not isinstance(loader, TensorBatches):
            return
        use = self.cache_features and not any(p.requires_grad for p in self.backbone.parameters())
        # Caching costs one backbone pass over the whole split: worth it only when its epochs are not cut short.
        if use and split not in self._images and batches >= len(loader):
            self._images[split], loader.inputs = loader.inputs, self._pooled(loader.inputs)
            n = len(loader.inputs)
            rank_zero_info(f"lit_transfer: backbone frozen: its features of {n} {split} images are cached")
        elif not use and split in self._images:
            loader.inputs = self._images.pop(split)

    @torch.no_grad()
    def _pooled(self, images: Tensor) -> Tensor:
        # Filled chunk by chunk: a list of chunks and their concatenation would hold the cache twice for a moment
        # (2 x 507 MB for MNIST's 0-4), which was the run's peak memory.
        cache = torch.empty((len(images), *FEATURE_SHAPE), device=images.device)
        with self.trainer.precision_plugin.forward_context():
            for start in range(0, len(images), CACHE_CHUNK):
                chunk = images[start : start + CACHE_CHUNK]
                cache[start : start + len(chunk)] = self.backbone.pooled(self.normalize(chunk))
        return cache

    def on_train_start(self) -> None:
        self.train_sums.to(self.device)  # before a graph captures its updates
        if not (self.cuda_graph and graphs_safe(self.trainer) and hasattr(self.trainer.datamodule, "batch_size")):
            return
        full_batch = self.trainer.datamodule.batch_size
        if self.graph_whole_step:
            if reason := whole_step_unsafe(self.trainer):
                rank_zero_info(f"lit_transfer: whole-step CUDA graph off ({reason}); forward and backward graphed")
            else:
                self._step_graph = StepGraph(self._whole_step, self._warm_up, self._step_kind, full_batch, STEP_CAPTURE)
                return
        self._graphed = GraphedForward(self._eager_logits, [self.backbone, self.head], full_batch, GRAPH_FN)

    def on_train_end(self) -> None:
        for graphs in (self._graphed, self._step_graph):
            if graphs is not None:
                self.graph_replays += graphs.replays
        self._graphed = self._step_graph = None  # frees the graphs' memory pools
        self._replay_batch = False
        for split, loader in (("train", self.trainer.train_dataloader), ("val", self.trainer.val_dataloaders)):
            if split in self._images and isinstance(loader, TensorBatches):
                loader.inputs = self._images.pop(split)
