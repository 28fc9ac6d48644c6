"""CPU stand-ins for the CUDA captures, given to a ``CudaGraphs`` callback (no module globals patched).

The forward stand-in replays what a graph would: it copies each batch into the static input buffer captured with
the graph, and gives gradients only to the parameters that required them at capture (a graph's backward computes
those and no others), so a graph that is not rebuilt after unfreezing, or a batch that does not reach the static
buffer, changes the training and the tests comparing against eager training fail.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from lit_transfer.divergence import LossWatch
from lit_transfer.speed.cuda_graphs import CudaGraphs


def forward_stand_in(module: nn.Module, sample: Tensor) -> Callable[[Tensor], Tensor]:
    static_input = sample.clone()
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}  # fixed at capture

    def replay(inputs: Tensor) -> Tensor:
        static_input.copy_(inputs)
        params = {name: p if name in trainable else p.detach() for name, p in module.named_parameters()}
        return torch.func.functional_call(module, params, (static_input,))

    return replay


def stand_in_graphs() -> CudaGraphs:
    """``CudaGraphs`` that takes its graphed path on the CPU, with the stand-in capture."""
    return CudaGraphs(allowed=lambda trainer: True, capture=forward_stand_in)


class StandIns(L.Callback):
    """The same for a real CLI run: ``--trainer.callbacks+=graph_stand_ins.StandIns`` (tests/ on the path), with
    ``--speed.cuda_graphs=false`` so that the command line's own CudaGraphs does not run as well. ``defer_checks``:
    the NaN watch as on an accelerator (checked at checkpoints and epoch ends, not every step)."""

    def __init__(self, defer_checks: bool = False) -> None:
        self.graphs = stand_in_graphs()
        self.defer_checks = defer_checks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for watch in (cb for cb in trainer.callbacks if isinstance(cb, LossWatch) and self.defer_checks):
            watch.defer = lambda loss: True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.graphs.on_train_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.graphs.on_train_end(trainer, pl_module)
