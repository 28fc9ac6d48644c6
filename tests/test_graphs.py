"""The CUDA-graph training path: its logic on the CPU (stand-ins for the captures), the real thing where CUDA is."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from graph_stand_ins import use_stand_ins
from torch import nn

from lit_transfer import DigitsDataModule, FreezeFeatures, TransferModule
from lit_transfer.speed.cuda_graphs import GraphedForward, graphs_safe
from lit_transfer.speed.step_graph import StepGraph, make_capturable

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def train(
    mnist_root: Path,
    graphed: bool,
    *,
    freeze: FreezeFeatures | None = None,
    device="cpu",
    whole_step: bool = False,
    epochs: int = 2,
    cache_features: bool = True,
    **trainer_args,
):
    """Two epochs on the synthetic digits; the graphed path forced on (and, on the CPU, its capture stood in)."""
    L.seed_everything(0)
    data = DigitsDataModule(str(mnist_root), download=False, batch_size=16, val_size=0.2)
    model = TransferModule(graph_whole_step=whole_step, cache_features=cache_features)
    if graphed and device == "cpu":
        use_stand_ins(model)
    elif graphed:
        model.graphs_allowed = lambda trainer: True
    else:
        model.graphs_allowed = lambda trainer: False
    trainer = L.Trainer(
        accelerator=device,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[freeze] if freeze else [],
        deterministic=True,
        **trainer_args,
    )
    trainer.fit(model, data)
    return model


def assert_same_training(a: TransferModule, b: TransferModule) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert torch.equal(a.trainer.callback_metrics[key], b.trainer.callback_metrics[key]), key
    assert a.trainer.global_step == b.trainer.global_step


@pytest.mark.parametrize("frozen", [False, True], ids=["whole-model", "frozen-backbone-cached-features"])
def test_graphed_path_logic_gives_identical_updates_on_cpu(frozen: bool, mnist_root: Path) -> None:
    freeze = (lambda: FreezeFeatures()) if frozen else (lambda: None)
    eager = train(mnist_root, False, freeze=freeze())
    graphed = train(mnist_root, True, freeze=freeze())
    # 48 training images, batch 16: 3 full batches per epoch, each through the graphed path; validation eager
    assert eager.graph_replays == 0 and graphed.graph_replays == 6
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert graphed.trainer.global_step == eager.trainer.global_step == 6
    assert graphed._graphed is None  # freed when training ends


def test_graphed_forward_is_captured_again_when_the_backbone_unfreezes(mnist_root: Path) -> None:
    # Images in every epoch (no feature cache), so only the trainable parameters tell the graphs apart: a graph
    # captured while the backbone was frozen computes no gradient for it (as a real CUDA graph would not).
    runs = [
        train(mnist_root, g, freeze=FreezeFeatures(unfreeze_at_epoch=1), epochs=3, cache_features=False)
        for g in (False, True)
    ]
    assert runs[1].graph_replays == 9
    assert_same_training(*runs)
    assert not torch.equal(runs[1].backbone.conv1.weight, train(mnist_root, False, epochs=0).backbone.conv1.weight)


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


@pytest.mark.parametrize("frozen", [False, True], ids=["whole-model", "frozen-backbone-cached-features"])
def test_whole_step_graph_logic_gives_identical_training_on_cpu(frozen: bool, mnist_root: Path) -> None:
    freeze = (lambda: FreezeFeatures()) if frozen else (lambda: None)
    eager = train(mnist_root, False, freeze=freeze(), whole_step=True)
    whole = train(mnist_root, True, freeze=freeze(), whole_step=True)
    # 3 full batches per epoch: the first runs eagerly (it creates the optimizer state), the other 5 are replays
    assert eager.graph_replays == 0 and whole.graph_replays == 5
    assert_same_training(eager, whole)
    assert whole.trainer.global_step == 6
    assert whole._step_graph is None and whole._graphed is None  # freed when training ends


def test_whole_step_graph_is_captured_again_after_unfreezing(mnist_root: Path) -> None:
    runs = [
        train(mnist_root, g, freeze=FreezeFeatures(unfreeze_at_epoch=1), whole_step=True, epochs=3)
        for g in (False, True)
    ]
    # epoch 0: cached features (1 eager + 2 replays); epoch 1: images and a new parameter group, a new kind
    # (1 eager + 2 replays); epoch 2: 3 replays
    assert runs[1].graph_replays == 7
    assert_same_training(*runs)
    assert len(runs[1].trainer.optimizers[0].param_groups) == 2


def test_whole_step_graph_steps_aside_for_gradient_clipping(mnist_root: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        model = train(mnist_root, True, whole_step=True, gradient_clip_val=1.0)
    assert "whole-step CUDA graph off (gradient clipping is set)" in caplog.text
    assert model.graph_replays == 6  # forward and backward graphed instead, every full batch


def test_step_graph_replays_a_kind_from_its_second_full_batch() -> None:
    captured, ran = [], []

    def capture(warmup, step):
        captured.append(len(ran))
        return step

    weight = torch.ones(3)
    graph = StepGraph(
        step=lambda x, y: ran.append((x.clone(), y.clone())) or x.sum(),
        warmup=lambda x, y: None,
        kind=lambda x: (tuple(x.shape), weight.requires_grad),
        full_batch=4,
        capture=capture,
    )
    assert not graph.will_replay(torch.ones(2, 3))  # a short batch: always eager
    assert not graph.will_replay(torch.ones(4, 3))  # the first full batch of a kind: eager
    assert graph.will_replay(torch.ones(4, 3)) and captured == []
    x, y = torch.full((4, 3), 2.0), torch.arange(4)
    assert graph(x, y) == 24 and captured == [0] and graph.replays == 1
    assert torch.equal(ran[0][0], x) and torch.equal(ran[0][1], y)  # the batch went through the static copies
    assert graph(torch.ones(4, 3), y) == 12 and captured == [0]  # replayed, not captured again
    weight.requires_grad_(True)  # another kind (unfreezing): one eager batch, then a new capture
    assert not graph.will_replay(torch.ones(4, 3))
    assert graph.will_replay(torch.ones(4, 3))
    graph(torch.ones(4, 3), y)
    assert captured == [0, 2] and len(graph.graphs) == 1  # the stale graph was dropped


def test_make_capturable_moves_resumed_step_counts_to_the_parameters() -> None:
    # a parameter on another device than its loaded CPU step count ("meta" stands for the GPU here)
    param = torch.nn.Parameter(torch.ones(2, device="meta"))
    optimizer = torch.optim.Adadelta([param])
    optimizer.state[param] = {"step": torch.tensor(3.0), "square_avg": torch.zeros(2, device="meta")}
    make_capturable(optimizer)
    assert optimizer.param_groups[0]["capturable"] is True
    assert optimizer.state[param]["step"].device == param.device


def test_graphs_only_where_safe() -> None:
    cpu = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert not graphs_safe(cpu)


@CUDA
@pytest.mark.parametrize(("whole_step", "replays"), [(False, 6), (True, 5)], ids=["forward-backward", "whole-step"])
def test_cuda_graph_matches_eager_on_gpu(whole_step: bool, replays: int, mnist_root: Path, monkeypatch) -> None:
    # Exact arithmetic for the comparison: no TF32, no dropout (the graph draws its masks at other random offsets).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(TransferModule, "on_fit_start", lambda self: self.apply(_no_dropout))
    eager = train(mnist_root, False, device="cuda")
    graphed = train(mnist_root, True, device="cuda", whole_step=whole_step)
    assert graphed.graph_replays == replays
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    for key in ("train_loss", "train_acc"):
        torch.testing.assert_close(eager.trainer.callback_metrics[key], graphed.trainer.callback_metrics[key])


@CUDA
def test_graphed_dropout_draws_fresh_masks_on_each_replay() -> None:
    model = TransferModule().cuda().train()
    graphed = GraphedForward(model.logits, [model.backbone, model.head], full_batch=16)
    images = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8, device="cuda")
    first, second = graphed(images).clone(), graphed(images).clone()
    assert graphed.replays == 2 and len(graphed.graphs) == 1
    assert not torch.equal(first, second)  # same input and weights: only the dropout masks differ
    graphed(images).logsumexp(1).mean().backward()  # the graphed backward fills every gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _no_dropout(m: torch.nn.Module) -> None:
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
