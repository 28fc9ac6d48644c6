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

from collections.abc import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

# (module, sample input) -> a module computing the same, replayed from a graph. Tests give ``CudaGraphs`` a CPU
# stand-in (its ``capture``) to check the logic around it: which batches replay, which kind, when graphs are
# rebuilt.
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


class CudaGraphs(L.Callback):
    """Training batches' forward and backward replayed from CUDA graphs where ``allowed`` (``graphs_safe``).

    From the start of training to its end the module's ``forward`` is, while training with gradients, a
    ``GraphedForward`` over whatever forward it had (the feature cache's included); evaluation runs eagerly.
    ``--speed.cuda_graphs false`` turns it off. ``allowed`` and ``capture`` are what tests replace to run this
    logic on the CPU (stand-ins for the captures).
    """

    def __init__(self, allowed: Callable[[L.Trainer], bool] = graphs_safe, capture: GraphFn = graph_cuda) -> None:
        self.allowed, self.capture = allowed, capture
        self.graphed: GraphedForward | None = None
        self.replays = 0  # training batches run as graph replays in the last fit
        self._previous: dict = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.replays = 0
        if not (self.allowed(trainer) and hasattr(trainer.datamodule, "batch_size")):
            return
        eager = pl_module.forward  # the class's, or one a callback installed (the feature cache's)
        self._previous = {k: pl_module.__dict__[k] for k in ("forward",) if k in pl_module.__dict__}
        graphed = GraphedForward(
            eager, [pl_module.backbone, pl_module.head], trainer.datamodule.batch_size, self.capture
        )
        self.graphed = graphed

        def forward(inputs: Tensor) -> Tensor:
            if pl_module.training and torch.is_grad_enabled():
                return graphed(inputs)
            return eager(inputs)

        pl_module.forward = forward

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.graphed is None:
            return
        self.replays = self.graphed.replays
        rank_zero_info(f"lit_transfer: {self.replays} training batches replayed from CUDA graphs")
        self.graphed = None  # frees the graphs' memory pools
        pl_module.__dict__.pop("forward", None)
        pl_module.__dict__.update(self._previous)
