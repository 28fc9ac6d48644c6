"""The CUDA-graph training step: its logic on the CPU (with a stand-in capture), the real thing where CUDA is."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import lit_transfer.module as module_file
from lit_transfer import DigitsDataModule, FreezeFeatures, TransferModule
from lit_transfer.graphs import GraphedStep, capture_eager


def train(mnist_root: Path, graphed: bool, monkeypatch, *, freeze: FreezeFeatures | None = None, device="cpu"):
    """Two epochs on the synthetic digits; the graphed path forced on (and, on the CPU, its capture stood in)."""
    monkeypatch.setattr(module_file, "graphs_safe", lambda trainer: graphed)
    if device == "cpu":
        monkeypatch.setattr(module_file, "GRAPH_CAPTURE", capture_eager)
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
    assert eager.automatic_optimization and not graphed.automatic_optimization
    # 48 training images, batch 16: 3 full batches per epoch, 2 warm-up steps per kind, the rest replayed
    assert graphed.graph_replays == 6 - 2
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert graphed.trainer.global_step == eager.trainer.global_step == 6


def test_short_batches_and_new_kinds_run_eagerly() -> None:
    calls = []
    weight = torch.nn.Parameter(torch.ones(3))

    def forward_backward(x, y):
        calls.append(x.shape[0])
        loss = (weight * x).sum()
        loss.backward()
        return loss.detach(), x

    step = GraphedStep(forward_backward, [weight], warmup=1, capture=capture_eager)
    step(torch.ones(4, 3), torch.zeros(4), full_batch=4)  # warm-up, eager
    out = step(torch.full((4, 3), 2.0), torch.zeros(4), full_batch=4)  # captured, then replayed
    assert step.replays == 1 and out[0].item() == 24.0
    out = step(torch.full((4, 3), 3.0), torch.zeros(4), full_batch=4)  # replayed on the new batch's values
    assert step.replays == 2 and out[0].item() == 36.0
    step(torch.ones(2, 3), torch.zeros(2), full_batch=4)  # the short last batch: eager
    assert step.replays == 2
    weight.requires_grad_(False)  # another kind (e.g. after unfreezing): warms up and is captured anew
    assert step.key(torch.ones(4, 3)) not in step.graphs


def test_graphs_only_where_safe() -> None:
    cpu = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert not module_file.graphs_safe(cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_matches_eager_on_gpu(mnist_root: Path, monkeypatch) -> None:
    monkeypatch.setattr(TransferModule, "on_fit_start", lambda self: self.apply(_no_dropout))
    eager = train(mnist_root, False, monkeypatch, device="cuda")
    graphed = train(mnist_root, True, monkeypatch, device="cuda")
    assert graphed.graph_replays > 0
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _no_dropout(m: torch.nn.Module) -> None:
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0  # the graph draws dropout masks from another random offset: compare without them
