"""The CUDA-graph training path: its logic on the CPU (stand-ins for the captures), the real thing where CUDA is."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from graph_stand_ins import stand_in_graphs
from torch import nn

from lit_transfer import DigitsDataModule, FreezeFeatures, TransferModule
from lit_transfer.speed import CudaGraphs, FastCpuLayers, FeatureCache
from lit_transfer.speed.cuda_graphs import GraphedForward, graphs_safe

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def train(
    mnist_root: Path,
    graphed: bool,
    *,
    freeze: FreezeFeatures | None = None,
    device="cpu",
    epochs: int = 2,
    feature_cache: bool = True,
    **trainer_args,
) -> tuple[TransferModule, CudaGraphs]:
    """Two epochs on the synthetic digits; the graphed path forced on (and, on the CPU, its capture stood in)."""
    L.seed_everything(0)
    data = DigitsDataModule(str(mnist_root), download=False, batch_size=16, val_size=0.2)
    model = TransferModule()
    graphs = stand_in_graphs() if graphed and device == "cpu" else CudaGraphs(allowed=lambda trainer: graphed)
    speed = [FastCpuLayers(), *([FeatureCache()] if feature_cache else []), graphs]
    trainer = L.Trainer(
        accelerator=device,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*([freeze] if freeze else []), *speed],
        deterministic=True,
        **trainer_args,
    )
    trainer.fit(model, data)
    return model, graphs


def assert_same_training(a: TransferModule, b: TransferModule) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert torch.equal(a.trainer.callback_metrics[key], b.trainer.callback_metrics[key]), key
    assert a.trainer.global_step == b.trainer.global_step


@pytest.mark.parametrize("frozen", [False, True], ids=["whole-model", "frozen-backbone-cached-features"])
def test_graphed_path_logic_gives_identical_updates_on_cpu(frozen: bool, mnist_root: Path) -> None:
    freeze = (lambda: FreezeFeatures()) if frozen else (lambda: None)
    (eager, eager_graphs), (graphed, graphs) = (
        train(mnist_root, False, freeze=freeze()),
        train(mnist_root, True, freeze=freeze()),
    )
    # 48 training images, batch 16: 3 full batches per epoch, each through the graphed path; validation eager
    assert eager_graphs.replays == 0 and graphs.replays == 6
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert graphed.trainer.global_step == eager.trainer.global_step == 6
    assert graphs.graphed is None  # freed when training ends
    assert "forward" not in graphed.__dict__  # the module's own forward again


def test_graphed_forward_is_captured_again_when_the_backbone_unfreezes(mnist_root: Path) -> None:
    # Images in every epoch (no feature cache), so only the trainable parameters tell the graphs apart: a graph
    # captured while the backbone was frozen computes no gradient for it (as a real CUDA graph would not).
    runs = [
        train(mnist_root, g, freeze=FreezeFeatures(unfreeze_at_epoch=1), epochs=3, feature_cache=False)
        for g in (False, True)
    ]
    assert runs[1][1].replays == 9
    assert_same_training(runs[0][0], runs[1][0])
    untrained = train(mnist_root, False, epochs=0)[0]
    assert not torch.equal(runs[1][0].backbone.conv1.weight, untrained.backbone.conv1.weight)


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
    assert not graphs_safe(cpu)


@CUDA
def test_cuda_graph_matches_eager_on_gpu(mnist_root: Path, monkeypatch) -> None:
    # Exact arithmetic for the comparison: no TF32, no dropout (the graph draws its masks at other random offsets).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(TransferModule, "on_fit_start", lambda self: self.apply(_no_dropout))
    eager, _ = train(mnist_root, False, device="cuda")
    graphed, graphs = train(mnist_root, True, device="cuda")
    assert graphs.replays == 6
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    for key in ("train_loss", "train_acc"):
        torch.testing.assert_close(eager.trainer.callback_metrics[key], graphed.trainer.callback_metrics[key])


@CUDA
def test_graphed_dropout_draws_fresh_masks_on_each_replay() -> None:
    model = TransferModule().cuda().train()
    graphed = GraphedForward(model, [model.backbone, model.head], full_batch=16)
    images = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8, device="cuda")
    first, second = graphed(images).clone(), graphed(images).clone()
    assert graphed.replays == 2 and len(graphed.graphs) == 1
    assert not torch.equal(first, second)  # same input and weights: only the dropout masks differ
    graphed(images).logsumexp(1).mean().backward()  # the graphed backward fills every gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _no_dropout(m: torch.nn.Module) -> None:
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
