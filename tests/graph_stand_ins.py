"""CPU stand-ins for the CUDA captures, given to a ``TransferModule`` instance (no module globals patched).

They replay what a graph would: the forward stand-in copies each batch into the static input buffer captured with
the graph, and gives gradients only to the parameters that required them at capture (a graph's backward computes
those and no others), so a graph that is not rebuilt after unfreezing, or a batch that does not reach the static
buffer, changes the training and the tests comparing against eager training fail. The whole-step stand-in replays
the step closure over the static buffers of ``StepGraph``.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from lit_transfer.divergence import LossWatch


def forward_stand_in(module: nn.Module, sample: Tensor) -> Callable[[Tensor], Tensor]:
    static_input = sample.clone()
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}  # fixed at capture

    def replay(inputs: Tensor) -> Tensor:
        static_input.copy_(inputs)
        params = {name: p if name in trainable else p.detach() for name, p in module.named_parameters()}
        return torch.func.functional_call(module, params, (static_input,))

    return replay


def step_stand_in(warmup: Callable[[], None], step: Callable[[], Tensor]) -> Callable[[], Tensor]:
    # The warm-up runs with the random state put back, as a graph's warm-up leaves the eager stream's masks alone.
    with torch.random.fork_rng():
        warmup()
    return step


def use_stand_ins(model: nn.Module, defer_checks: bool = False) -> None:
    """Let ``model`` take its CUDA-graph paths on the CPU; ``defer_checks``: watch the loss as on an accelerator."""
    model.graphs_allowed = lambda trainer: True
    model.forward_capture = forward_stand_in
    model.step_capture = step_stand_in
    if defer_checks:
        model.loss_watch = LossWatch(defer=lambda loss: True)


class StandIns(L.Callback):
    """The same for a real CLI run: ``--trainer.callbacks+=graph_stand_ins.StandIns`` (tests/ on the path)."""

    def __init__(self, defer_checks: bool = False) -> None:
        self.defer_checks = defer_checks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        use_stand_ins(pl_module, self.defer_checks)
