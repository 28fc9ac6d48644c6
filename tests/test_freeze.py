"""``FreezeFeatures`` in a real Lightning ``Trainer`` on the synthetic digits: which layers stay as stage one left
them, gradual unfreezing (its learning rate, its BatchNorm, a resume after it) and the options' errors. Quick: the
CLI tests of the same promises (test_batch_norm.py, test_resume.py) are slow. The callbacks are those of every
lit_transfer run (``run_callbacks``): the feature cache changes what a frozen layer costs, never what it computes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_transfer import DigitsDataModule, FreezeFeatures, TransferModule
from lit_transfer.callbacks import run_callbacks
from lit_transfer.model import count_params

LAYERS = ["backbone.conv1", "backbone.conv2", "head.fc1", "head.fc2"]  # the weight layers, input to output
NORMS = ["backbone.bn1", "backbone.bn2"]


def weights(model: TransferModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix + ".") and "num_batches" not in k]
    assert keys, prefix
    return not all(torch.equal(before[k], after[k]) for k in keys)


def fit(
    model: TransferModule, root: Path, freeze: FreezeFeatures, epochs: int, *callbacks, ckpt_path=None
) -> L.Trainer:
    data = DigitsDataModule(str(root), digits=[0, 1, 2, 3, 4], download=False, batch_size=16)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=run_callbacks([freeze, *callbacks]),  # what every lit_transfer run adds: the feature cache, ...
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("depth", [None, 1, 2, 3])  # None: the default, the notebook's (the backbone)
def test_exactly_the_first_depth_layers_keep_stage_ones_weights(depth: int | None, mnist_root: Path) -> None:
    L.seed_everything(0)
    model = TransferModule(num_classes=5)
    before = weights(model)
    fit(model, mnist_root, FreezeFeatures() if depth is None else FreezeFeatures(depth=depth), epochs=1)
    after, n = weights(model), depth or 2
    assert [changed(before, after, layer) for layer in LAYERS] == [False] * n + [True] * (4 - n)


def test_the_parameter_counts_of_a_frozen_backbone() -> None:
    """What every stage reports (results.json, the console): the notebook's CNN, its backbone frozen."""
    model = TransferModule(num_classes=5)
    FreezeFeatures().freeze_before_training(model)
    counts = count_params(model)
    assert counts == {"total_params": 600_165, "trainable_params": 590_597, "frozen_params": 9_568}


@pytest.mark.parametrize("train_bn", [False, True])
def test_a_frozen_batch_norm_keeps_its_statistics_unless_train_bn(train_bn: bool, mnist_root: Path) -> None:
    """Depth 1: bn1 follows conv1 (frozen), bn2 follows conv2 (training). Lightning's default (train_bn=True)
    lets the frozen bn1's statistics drift; lit_transfer's keeps them."""
    L.seed_everything(0)
    model = TransferModule(num_classes=5, batch_norm=True)
    before = weights(model)
    fit(model, mnist_root, FreezeFeatures(depth=1, train_bn=train_bn), epochs=1)
    after = weights(model)
    stats = ["running_mean", "running_var"]
    assert all(torch.equal(before[f"backbone.bn1.{s}"], after[f"backbone.bn1.{s}"]) for s in stats) != train_bn
    assert not any(torch.equal(before[f"backbone.bn2.{s}"], after[f"backbone.bn2.{s}"]) for s in stats)
    assert not changed(before, after, "backbone.conv1") and changed(before, after, "backbone.conv2")


class Snapshot(L.Callback):
    """The weights at the end of every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(weights(pl_module))


def test_gradual_unfreezing_adds_the_whole_backbone_at_a_tenth_of_the_rate(mnist_root: Path) -> None:
    L.seed_everything(0)
    model = TransferModule(num_classes=5, batch_norm=True)
    before, snapshot = weights(model), Snapshot()
    trainer = fit(model, mnist_root, FreezeFeatures(unfreeze_at_epoch=1), 2, snapshot)
    first, added = trainer.optimizers[0].param_groups
    backbone = [*model.backbone.conv1.parameters(), *model.backbone.bn1.parameters()]
    backbone += [*model.backbone.conv2.parameters(), *model.backbone.bn2.parameters()]
    assert {id(p) for p in added["params"]} == {id(p) for p in backbone}  # BatchNorm's weight and bias too
    assert added["lr"] == pytest.approx(0.1 * first["lr"])  # backbone_lr_factor's default
    epoch0, epoch1 = snapshot.epochs
    assert not any(changed(before, epoch0, layer) for layer in ["backbone.conv1", "backbone.conv2", *NORMS])
    assert all(changed(epoch0, epoch1, layer) for layer in ["backbone.conv1", "backbone.conv2", *NORMS])
    for norm in NORMS:  # unfrozen BatchNorm trains again: its statistics follow the data
        assert not torch.equal(epoch0[f"{norm}.running_mean"], epoch1[f"{norm}.running_mean"]), norm


def test_an_added_group_gets_the_schedulers_values_with_only_learning_rates_scaled() -> None:
    """OneCycleLR writes its values into every group it starts with; the group unfreezing adds later lacks them:
    it gets the first group's, the learning rates scaled by backbone_lr_factor and the momenta as they are."""
    model = TransferModule(num_classes=5)
    freeze = FreezeFeatures(unfreeze_at_epoch=1, backbone_lr_factor=0.25)
    freeze.freeze_before_training(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    freeze.finetune_function(model, 0, optimizer)
    assert len(optimizer.param_groups) == 1  # not yet
    freeze.finetune_function(model, 1, optimizer)
    first, added = optimizer.param_groups
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        assert added[key] == pytest.approx(0.25 * first[key]), key
    for key in ("max_momentum", "base_momentum"):
        assert added[key] == first[key], key
    freeze.finetune_function(model, 2, optimizer)
    assert len(optimizer.param_groups) == 2  # added once


@pytest.mark.hparams_outside_cli  # load_from_checkpoint reads them
def test_a_run_resumed_after_unfreezing_keeps_training_the_backbone(mnist_root: Path) -> None:
    L.seed_everything(0)
    model = TransferModule(num_classes=5)
    save = ModelCheckpoint(dirpath=mnist_root / "ckpt", save_last=True)
    fit(model, mnist_root, FreezeFeatures(unfreeze_at_epoch=1), 2, save)
    resumed, snapshot = TransferModule(num_classes=5), Snapshot()
    last = str(mnist_root / "ckpt" / "last.ckpt")
    trainer = fit(resumed, mnist_root, FreezeFeatures(unfreeze_at_epoch=1), 3, snapshot, ckpt_path=last)
    assert len(trainer.optimizers[0].param_groups) == 2
    assert all(p.requires_grad for p in resumed.backbone.parameters())
    start = torch.load(last, weights_only=True)["state_dict"]
    assert changed(start, snapshot.epochs[-1], "backbone.conv1")  # it trained in the resumed epoch


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 0}, "depth must be 1, 2 or 3 (weight layers from the input), got 0"),
        ({"depth": 4}, "depth must be 1, 2 or 3 (weight layers from the input), got 4"),
        ({"backbone_lr_factor": 0.0}, "backbone_lr_factor must be positive, got 0.0"),
    ],
)
def test_bad_options_say_what_is_allowed(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FreezeFeatures(**options)
