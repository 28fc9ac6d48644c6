"""The CUDA-graph training path: its logic on the CPU (a stand-in for the capture), the real thing where CUDA is."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

import lit_transfer.module as module_file
from lit_transfer import DigitsDataModule, FreezeFeatures, TransferModule
from lit_transfer.graphs import GraphedForward

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def stand_in(module: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The CPU stand-in for ``make_graphed_callables``: the same module, run eagerly."""
    return module


def train(mnist_root: Path, graphed: bool, monkeypatch, *, freeze: FreezeFeatures | None = None, device="cpu"):
    """Two epochs on the synthetic digits; the graphed path forced on (and, on the CPU, its capture stood in)."""
    monkeypatch.setattr(module_file, "graphs_safe", lambda trainer: graphed)
    if device == "cpu":
        monkeypatch.setattr(module_file, "GRAPH_FN", stand_in)
    L.seed_everything(0)
    data = DigitsDataModule(str(mnist_root), download=False, batch_size=16, val_size=0.2)
    model = TransferModule()
    trainer = L.Trainer(
        accelerator=device,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[freeze] if freeze else [],
        deterministic=True,
    )
    trainer.fit(model, data)
    return model


@pytest.mark.parametrize("frozen", [False, True], ids=["whole-model", "frozen-backbone-cached-features"])
def test_graphed_path_logic_gives_identical_updates_on_cpu(frozen: bool, mnist_root: Path, monkeypatch) -> None:
    freeze = (lambda: FreezeFeatures()) if frozen else (lambda: None)
    eager = train(mnist_root, False, monkeypatch, freeze=freeze())
    graphed = train(mnist_root, True, monkeypatch, freeze=freeze())
    # 48 training images, batch 16: 3 full batches per epoch, each through the graphed path; validation eager
    assert eager.graph_replays == 0 and graphed.graph_replays == 6
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert graphed.trainer.global_step == eager.trainer.global_step == 6
    assert graphed._graphed is None  # freed when training ends


def test_short_batches_run_eagerly_and_each_kind_is_graphed_once() -> None:
    built = []

    def counting(module: nn.Module, sample: torch.Tensor) -> nn.Module:
        built.append(tuple(sample.shape))
        return module

    layer = nn.Linear(3, 2)
    graphed = GraphedForward(layer, [layer], full_batch=4, graph=counting)
    full = graphed(torch.ones(4, 3))
    assert torch.equal(full, layer(torch.ones(4, 3))) and graphed.replays == 1 and built == [(4, 3)]
    graphed(torch.full((4, 3), 2.0))  # the same kind: no new graph
    assert graphed.replays == 2 and built == [(4, 3)]
    graphed(torch.ones(2, 3))  # the short last batch: eager
    assert graphed.replays == 2 and built == [(4, 3)]
    layer.weight.requires_grad_(False)  # another kind (e.g. after freezing or unfreezing): graphed anew
    graphed(torch.ones(4, 3))
    assert built == [(4, 3), (4, 3)] and len(graphed.graphs) == 2


def test_graphs_only_where_safe() -> None:
    cpu = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert not module_file.graphs_safe(cpu)


@CUDA
def test_cuda_graph_matches_eager_on_gpu(mnist_root: Path, monkeypatch) -> None:
    # Exact arithmetic for the comparison: no TF32, no dropout (the graph draws its masks at other random offsets).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(TransferModule, "on_fit_start", lambda self: self.apply(_no_dropout))
    eager = train(mnist_root, False, monkeypatch, device="cuda")
    graphed = train(mnist_root, True, monkeypatch, device="cuda")
    assert graphed.graph_replays == 6
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@CUDA
def test_graphed_dropout_draws_fresh_masks_on_each_replay() -> None:
    model = TransferModule().cuda().train()
    graphed = GraphedForward(model._eager_logits, [model.backbone, model.head], full_batch=16)
    images = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8, device="cuda")
    first, second = graphed(images).clone(), graphed(images).clone()
    assert graphed.replays == 2 and len(graphed.graphs) == 1
    assert not torch.equal(first, second)  # same input and weights: only the dropout masks differ
    graphed(images).logsumexp(1).mean().backward()  # the graphed backward fills every gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _no_dropout(m: torch.nn.Module) -> None:
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
