"""The network's forward and backward as CUDA graphs, one per input kind, for full training batches.

A CUDA graph replays a fixed sequence of kernels with one launch, removing the per-kernel CPU overhead that
dominates a model this small on a big GPU. PyTorch's ``torch.cuda.make_graphed_callables`` does the capture: it
returns a module whose forward and backward each replay a graph inside an ordinary autograd function, so the loss,
``loss.backward()``, the optimizer and everything Lightning does around them (step counting, gradient clipping
and accumulation, ``BaseFinetuning``'s parameter groups) stay as they are. Lightning has no CUDA-graph step of its
own, and ``torch.compile(mode="reduce-overhead")`` costs far more compile time than the whole training takes here.

An earlier hand-written capture of forward + backward + gradient writes trained measurably worse on an H200
(98.2% instead of 99.2% on 5-9) and was replaced by this one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from lit_transfer.speed.step_graph import Capture, StepGraph, capture_cuda, make_capturable

# (module, sample input) -> a module computing the same, replayed from a graph. Tests give a TransferModule a CPU
# stand-in (its ``forward_capture``) to check the logic around it: which batches replay, which kind, when graphs
# are rebuilt.
GraphFn = Callable[[nn.Module, Tensor], nn.Module]


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


def graph_cuda(module: nn.Module, sample: Tensor) -> nn.Module:
    # The warm-up iterations run on a copy of the batch and use torch.autograd.grad: no parameter or .grad changes.
    return torch.cuda.make_graphed_callables(module, (sample.clone(),))


class _Forward(nn.Module):
    """``fn`` as a module whose parameters are those of ``parts``: what ``make_graphed_callables`` needs to know
    which gradients the graphed backward must return."""

    def __init__(self, fn: Callable[[Tensor], Tensor], parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn

    def forward(self, inputs: Tensor) -> Tensor:
        return self.fn(inputs)


class GraphedForward:
    """Computes ``fn(inputs)`` through a CUDA graph for full batches, eagerly otherwise.

    A kind is the input shape and dtype (full batches of images, of cached features, ...) and which parameters
    train; each kind is graphed on its first batch. Other batch sizes (the short last batch) run eagerly. Kept out
    of the LightningModule's submodules on purpose, so its modules never appear in a checkpoint.
    """

    def __init__(
        self, fn: Callable[[Tensor], Tensor], parts: Sequence[nn.Module], full_batch: int, graph: GraphFn = graph_cuda
    ) -> None:
        self.fn, self.parts, self.full_batch, self.graph = fn, list(parts), full_batch, graph
        self.graphs: dict[tuple, nn.Module] = {}
        self.replays = 0

    def key(self, inputs: Tensor) -> tuple:
        return (tuple(inputs.shape), inputs.dtype, tuple(p.requires_grad for m in self.parts for p in m.parameters()))

    def __call__(self, inputs: Tensor) -> Tensor:
        if inputs.shape[0] != self.full_batch:
            return self.fn(inputs)
        key = self.key(inputs)
        if key not in self.graphs:
            self.graphs[key] = self.graph(_Forward(self.fn, self.parts), inputs)
        self.replays += 1
        return self.graphs[key](inputs)


class CudaGraphSteps:
    """Mixed into ``TransferModule``: its training step replayed from CUDA graphs where ``graphs_allowed``.

    ``--model.cuda_graph`` (on by default) graphs forward and backward (``GraphedForward``); with
    ``--model.graph_whole_step`` the whole step (``StepGraph``, lit_transfer/speed/step_graph.py). For the latter
    Lightning's automatic optimization still runs around each batch, but on a replayed batch its closure only runs
    ``training_step`` (the replay): ``zero_grad``, ``backward`` and ``optimizer.step`` are skipped, because the
    graph did them. The module provides ``logits``, ``training_loss``, ``train_sums`` and ``loss_watch``.
    """

    # What tests replace on an instance to run this logic on the CPU (stand-ins for the captures).
    graphs_allowed: Callable[[L.Trainer], bool] = staticmethod(graphs_safe)
    forward_capture: GraphFn = staticmethod(graph_cuda)
    step_capture: Capture = staticmethod(capture_cuda)

    _graphed: GraphedForward | None = None
    _step_graph: StepGraph | None = None
    _replay_batch = False  # this training batch is one whole-step graph replay (decided at its start)
    graph_replays = 0  # training batches run as graph replays in the last fit

    def training_logits(self, inputs: Tensor) -> Tensor:
        if self._graphed is not None and self.training and torch.is_grad_enabled():
            return self._graphed(inputs)
        return self.logits(inputs)

    def on_train_start(self) -> None:
        self.train_sums.to(self.device)  # before a graph captures its updates
        datamodule = self.trainer.datamodule
        if not (self.cuda_graph and self.graphs_allowed(self.trainer) and hasattr(datamodule, "batch_size")):
            return
        full_batch = datamodule.batch_size
        if self.graph_whole_step:
            if reason := whole_step_unsafe(self.trainer):
                rank_zero_info(f"lit_transfer: whole-step CUDA graph off ({reason}); forward and backward graphed")
            else:
                parts = self._whole_step, self._warm_up, self._step_kind
                self._step_graph = StepGraph(*parts, full_batch, self.step_capture)
                return
        self._graphed = GraphedForward(self.logits, [self.backbone, self.head], full_batch, self.forward_capture)

    def on_train_epoch_start(self) -> None:
        if self._step_graph is not None and self.device.type == "cuda":
            make_capturable(self.trainer.optimizers[0])  # also a group FreezeFeatures has just added

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._replay_batch = self._step_graph is not None and self._step_graph.will_replay(batch[0])
        self.loss_watch.start_step(self.global_step)

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

    def on_train_end(self) -> None:
        graphs = [g for g in (self._graphed, self._step_graph) if g is not None]
        self.graph_replays = sum(g.replays for g in graphs)
        if graphs:
            rank_zero_info(f"lit_transfer: {self.graph_replays} training batches replayed from CUDA graphs")
        self._graphed = self._step_graph = None  # frees the graphs' memory pools
        self._replay_batch = False

    def replay_step(self, inputs: Tensor, labels: Tensor) -> Tensor | None:
        """The whole step replayed from its graph, on the batches ``on_train_batch_start`` chose (else None)."""
        return self._step_graph(inputs, labels) if self._replay_batch else None

    def _whole_step(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """What one whole-step graph holds: Lightning's automatic step (zero_grad, training_step, backward,
        optimizer.step) in the same order, with the gradients zeroed in place rather than set to None."""
        optimizer = self.trainer.optimizers[0]
        optimizer.zero_grad(set_to_none=False)
        loss = self.training_loss(self.logits(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def _warm_up(self, inputs: Tensor, labels: Tensor) -> None:
        """Forward and backward without touching a parameter, a gradient or the optimizer (before a capture)."""
        loss = F.cross_entropy(self.logits(inputs), labels)
        torch.autograd.grad(loss, [p for p in self.parameters() if p.requires_grad])

    def _step_kind(self, inputs: Tensor) -> Hashable:
        """What a whole-step graph is valid for: the input, which parameters train, the optimizer's settings."""
        groups = tuple(
            (len(g["params"]), *sorted((k, v) for k, v in g.items() if isinstance(v, (bool, int, float))))
            for g in self.trainer.optimizers[0].param_groups
        )
        return tuple(inputs.shape), inputs.dtype, tuple(p.requires_grad for p in self.parameters()), groups
