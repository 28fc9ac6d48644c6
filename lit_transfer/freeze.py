"""``FreezeFeatures``: stage two's frozen backbone, and optionally its gradual unfreezing."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from lit_transfer.model import norm_layers, weight_layers


class FreezeFeatures(BaseFinetuning):
    """Freeze the backbone (the first ``depth`` weight layers) before training; optionally unfreeze it later.

    Frozen means ``requires_grad=False``: dropout in the frozen layers stays active while training, as in Keras. A
    frozen BatchNorm (``--model.batch_norm true``) is frozen whole: in evaluation mode, it normalises with the
    statistics it was trained with and leaves them unchanged, so the frozen layers compute what they computed in
    stage one. (Lightning's ``BaseFinetuning.freeze`` leaves it training by default, its statistics drifting
    with the new data; with ``train_bn=False`` it normalises each batch by that batch's own statistics.) ``depth``
    counts weight layers from the input: 1 = conv1, 2 = both convs (the backbone, the notebook), 3 = both convs and
    the first dense layer (Yosinski et al.'s n).
    """

    def __init__(
        self,
        depth: int = 2,
        unfreeze_at_epoch: int | None = None,
        backbone_lr_factor: float = 0.1,
        train_bn: bool = False,
    ) -> None:
        """
        Args:
            depth: How many weight layers, from the input, to freeze (1-3; 2 is the whole backbone).
            unfreeze_at_epoch: Epoch at which the frozen layers join training (gradual unfreezing, as in
                Lightning's fine-tuning example); ``None`` keeps them frozen throughout.
            backbone_lr_factor: Learning rate of the unfrozen layers relative to the head's.
            train_bn: Let the frozen layers' BatchNorm train, its statistics following the new data: Lightning's
                default, for the comparison (the study's); off keeps it frozen.
        """
        super().__init__()
        if not 1 <= depth <= 3:
            raise ValueError(f"FreezeFeatures depth must be 1, 2 or 3 (weight layers from the input), got {depth}")
        if backbone_lr_factor <= 0:
            raise ValueError(f"backbone_lr_factor must be positive, got {backbone_lr_factor}")
        self.depth, self.unfreeze_at_epoch, self.backbone_lr_factor = depth, unfreeze_at_epoch, backbone_lr_factor
        self.train_bn = train_bn

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # BaseFinetuning freezes on every setup; the test that follows fit must see the layers as training left
        # them (unfrozen after ``unfreeze_at_epoch``), so freeze for fitting only.
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def frozen_layers(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """The first ``depth`` weight layers and the BatchNorm layers of the convolutions among them."""
        return [*weight_layers(pl_module.backbone, pl_module.head)[: self.depth], *self.frozen_norms(pl_module)]

    def frozen_norms(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return norm_layers(pl_module.backbone, self.depth)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.frozen_layers(pl_module), train_bn=self.train_bn)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # unfreezes at unfreeze_at_epoch
        for norm in self.frozen_norms(pl_module):
            # Still frozen: evaluation mode (its stored statistics, unchanged); unfrozen: training again.
            frozen = not self.train_bn and not any(p.requires_grad for p in norm.parameters())
            norm.train(not frozen)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # ">=" and "still frozen" rather than "==": a run resumed in or after the unfreeze epoch has its layers
        # unfrozen already (on_fit_start below) and must not add them to the optimizer a second time.
        layers = self.frozen_layers(pl_module)
        still_frozen = any(not p.requires_grad for layer in layers for p in layer.parameters())
        if self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch and still_frozen:
            self.unfreeze_and_add_param_group(
                layers, optimizer, initial_denom_lr=1 / self.backbone_lr_factor, train_bn=True
            )
            # A scheduler keeps per-group values (OneCycleLR's initial_lr, max_lr, min_lr) that a group added now
            # lacks: the first group's, learning rates scaled like the group's own.
            first, added = optimizer.param_groups[0], optimizer.param_groups[-1]
            for key, value in first.items():
                if key not in added:
                    lr_like = key.endswith("lr") and isinstance(value, float)
                    added[key] = value * self.backbone_lr_factor if lr_like else value

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On resume, BaseFinetuning puts back the parameter groups that unfreezing added, but not their parameters'
        ``requires_grad``: setup() froze them again, and they would get no gradient for the rest of the run,
        silently. Works around Lightning issue #21901 (fix proposed in PR #21902); remove this method once the
        Lightning release that pyproject.toml requires includes that fix (tests/test_resume.py checks it)."""
        created = [len(optimizer.param_groups) for optimizer in trainer.optimizers]  # by configure_optimizers
        super().on_fit_start(trainer, pl_module)  # restores the groups saved in the checkpoint
        for optimizer, n in zip(trainer.optimizers, created, strict=True):
            for group in optimizer.param_groups[n:]:  # exactly the groups unfreeze_and_add_param_group added
                for param in group["params"]:
                    param.requires_grad_(True)
