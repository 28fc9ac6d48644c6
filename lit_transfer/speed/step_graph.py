"""The whole training step as one CUDA graph per input kind: forward, loss, backward, the optimizer's update and
the training sums, replayed for each full batch (``--model.graph_whole_step true``, on top of ``cuda_graph``).

EXPERIMENTAL: its logic is tested on the CPU (a stand-in capture that runs the step eagerly); the capture itself
has not yet run on a GPU, which is why it is off by default. ``cuda_graphs.py`` (forward and backward only, through
``torch.cuda.make_graphed_callables``) is the measured default.

Written by hand because Lightning has no graphed step, ``make_graphed_callables`` covers forward and backward
only, and ``torch.compile(mode="reduce-overhead")`` costs more compile time than this training takes. What a graph
needs, and where this module and ``TransferModule`` see to it:

- Everything the step writes and that outlives it exists before the capture, at a fixed address: the gradients
  (zeroed and accumulated in place, never set to ``None`` while this mode is on), the optimizer's state (created by
  one eager step of the same kind before the capture), the training sums and the step counter (zeroed in place).
- The optimizer is ``capturable`` (its step counts live on the GPU) and its hyperparameters are constants of the
  graph: no LR scheduler, and a new graph whenever the parameter groups change (unfreezing).
- Lightning's loop still runs around each batch (step counting, checkpoints, logging); on a replayed batch its
  closure runs ``training_step`` (the replay) and skips ``zero_grad``, ``backward`` and ``optimizer.step``, so no
  ``on_before_optimizer_step`` hook or gradient clipping may be configured.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor

# (warm-up, step) -> replay: runs ``warmup`` (no state change), captures ``step`` and returns a function that
# replays it and returns the step's output. Tests give the module a CPU stand-in (its ``step_capture``).
Capture = Callable[[Callable[[], None], Callable[[], Tensor]], Callable[[], Tensor]]


def capture_cuda(warmup: Callable[[], None], step: Callable[[], Tensor]) -> Callable[[], Tensor]:
    # Warm-up and capture on one side stream, as PyTorch's whole-network example does: lazily created cuBLAS
    # workspaces and loaded kernels then belong to the capturing stream before the capture starts.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        warmup()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        output = step()

    def replay() -> Tensor:
        graph.replay()
        return output

    replay.graph = graph  # the graph lives as long as its replay function
    return replay


class StepGraph:
    """Replays ``step(inputs, labels)`` from a graph for full batches of a kind it has seen run eagerly once.

    ``kind(inputs)`` names what a graph is only valid for (input shape and dtype, which parameters train, the
    optimizer's groups). The first full batch of a kind runs eagerly (through Lightning's usual step) and the
    second is captured; other batch sizes always run eagerly. Kept out of the LightningModule's submodules, so
    nothing of it reaches a checkpoint.
    """

    def __init__(
        self,
        step: Callable[[Tensor, Tensor], Tensor],
        warmup: Callable[[Tensor, Tensor], None],
        kind: Callable[[Tensor], Hashable],
        full_batch: int,
        capture: Capture = capture_cuda,
    ) -> None:
        self.step, self.warmup, self.kind, self.full_batch, self.capture = step, warmup, kind, full_batch, capture
        self.graphs: dict[Hashable, tuple[Tensor, Tensor, Callable[[], Tensor]]] = {}
        self.seen: set[Hashable] = set()
        self.decided: Hashable | None = None  # the kind of the batch will_replay said to replay
        self.replays = 0

    def will_replay(self, inputs: Tensor) -> bool:
        """Decided before the batch's step (Lightning's ``on_train_batch_start``): False means run it eagerly. The
        batch's kind is kept for its replay, so ``kind`` (which walks every parameter, benchmarks/RESULTS.md)
        runs once per step."""
        self.decided = None
        if inputs.shape[0] != self.full_batch:
            return False
        kind = self.kind(inputs)
        if kind in self.graphs or kind in self.seen:
            self.decided = kind
            return True
        self.seen.add(kind)  # this eager step creates what the capture needs
        return False

    def __call__(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Replay the graph of the kind ``will_replay`` decided for this batch, capturing it first if new."""
        kind = self.decided
        assert kind is not None, "will_replay decides each batch before its replay"
        if kind not in self.graphs:
            # A new kind makes the others stale (their parameter groups changed): drop them and their memory.
            self.graphs.clear()
            static = inputs.clone(), labels.clone()
            replay = self.capture(lambda: self.warmup(*static), lambda: self.step(*static))
            self.graphs[kind] = (*static, replay)
        static_inputs, static_labels, replay = self.graphs[kind]
        static_inputs.copy_(inputs)
        static_labels.copy_(labels)
        self.replays += 1
        return replay()


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Switch a torch optimizer to its capturable mode: step counts on the parameters' device (a resumed
    optimizer's come back on the CPU), so that its update can be replayed from a graph."""
    for group in optimizer.param_groups:
        group["capturable"] = True
    for param, state in optimizer.state.items():
        step = state.get("step")
        if isinstance(step, Tensor) and step.device != param.device:
            state["step"] = step.to(param.device)
