"""The training step's forward and backward as CUDA graphs: captured once per input shape, replayed per batch.

A CUDA graph replays a fixed sequence of kernels with one launch, removing the per-kernel CPU overhead that
dominates a model this small on a big GPU. Written by hand because Lightning has no CUDA-graph step and
``torch.compile(mode="reduce-overhead")`` costs far more compile time than the whole training takes here.
The optimizer step stays outside the graph (eager, foreach kernels), so Lightning's step counting, checkpoints
and ``BaseFinetuning``'s parameter groups work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

StepFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (inputs, labels) -> (loss, logits), backward done


def capture_cuda(fn: StepFn, inputs: Tensor, labels: Tensor) -> tuple[Callable[[], None], tuple[Tensor, Tensor]]:
    """Capture ``fn`` on static tensors; return the graph's replay and its static outputs (not yet computed)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(inputs, labels)
    return graph.replay, outputs


def capture_eager(fn: StepFn, inputs: Tensor, labels: Tensor) -> tuple[Callable[[], None], tuple[Tensor, Tensor]]:
    """A stand-in for ``capture_cuda`` on the CPU: "replaying" reruns ``fn`` into the same output tensors, so the
    logic around the graph (static buffers, shapes, warm-up, fallback) is testable without a GPU."""
    with torch.random.fork_rng(devices=[]):  # a real capture runs nothing: draw no random numbers either
        outputs = tuple(t.clone() for t in fn(inputs, labels))

    def replay() -> None:
        for static, fresh in zip(outputs, fn(inputs, labels), strict=True):
            static.copy_(fresh)

    return replay, outputs


class GraphedStep:
    """Runs ``forward_backward`` eagerly for the first ``warmup`` batches of each kind, then as a graph.

    A kind is the input shape and dtype (full batches of images, of cached features, ...) and which parameters
    train; other shapes (the short last batch) run eagerly. ``forward_backward`` must zero existing gradients
    itself, so that a replay overwrites them instead of accumulating.
    """

    def __init__(
        self, forward_backward: StepFn, params: Sequence[nn.Parameter], warmup: int = 2, capture: Any = None
    ) -> None:
        self.forward_backward, self.params, self.warmup = forward_backward, list(params), warmup
        self.capture = capture or capture_cuda
        self.seen: dict[tuple, int] = {}
        self.graphs: dict[tuple, tuple[Callable[[], None], Tensor, Tensor, tuple[Tensor, Tensor]]] = {}
        self.replays = 0

    def key(self, inputs: Tensor) -> tuple:
        return (tuple(inputs.shape), inputs.dtype, tuple(p.requires_grad for p in self.params))

    def __call__(self, inputs: Tensor, labels: Tensor, full_batch: int) -> tuple[Tensor, Tensor]:
        key = self.key(inputs)
        if inputs.shape[0] != full_batch:
            return self.forward_backward(inputs, labels)  # the short last batch
        if key not in self.graphs:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] <= self.warmup:
                return self._warm(inputs, labels)
            static_inputs, static_labels = inputs.clone(), labels.clone()
            for p in self.params:  # the graph's backward allocates the gradients it will overwrite on replay
                p.grad = None
            replay, outputs = self.capture(self.forward_backward, static_inputs, static_labels)
            self.graphs[key] = (replay, static_inputs, static_labels, outputs)
        replay, static_inputs, static_labels, outputs = self.graphs[key]
        static_inputs.copy_(inputs)
        static_labels.copy_(labels)
        replay()
        self.replays += 1
        return outputs

    def _warm(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # CUDA graphs need the libraries' lazy set-up done before capture, on a side stream; these are real steps.
        if not inputs.is_cuda:
            return self.forward_backward(inputs, labels)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outputs = self.forward_backward(inputs, labels)
        torch.cuda.current_stream().wait_stream(stream)
        return outputs
