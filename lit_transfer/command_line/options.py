"""The command line's options beyond LightningCLI's own: ``--freeze.*`` merged into ``--trainer.callbacks``,
``--speed.feature_cache``, and the top-level ``--optimizer`` refused."""

from __future__ import annotations

from typing import Any

from jsonargparse import ArgumentParser, Namespace

from lit_transfer.errors import UserError
from lit_transfer.freeze import FreezeFeatures

FREEZE_HELP = {
    "depth": "FreezeFeatures: weight layers to freeze, from the input (1-3; 2 is the backbone).",
    "unfreeze_at_epoch": "FreezeFeatures: epoch at which the frozen layers join training (gradual unfreezing).",
    "backbone_lr_factor": "FreezeFeatures: learning rate of the unfrozen layers relative to the head's.",
    "train_bn": "FreezeFeatures: let a frozen BatchNorm train (Lightning's default; off: frozen, evaluation mode).",
}
FREEZE_TYPES = {
    "depth": int | None,
    "unfreeze_at_epoch": int | None,
    "backbone_lr_factor": float | None,
    "train_bn": bool | None,
}


def refuse_top_level_optimizer(config: Namespace) -> None:
    """LightningCLI's ``--optimizer``/``--lr_scheduler`` would replace the module's ``configure_optimizers``."""
    for key, option in (("optimizer", "--model.optimizer"), ("lr_scheduler", "--model.lr_scheduler")):
        if config.get(key) is not None:
            raise UserError(
                f"--{key} would replace the module's configure_optimizers (which gives the optimizer only the "
                f"trainable parameters, so a frozen backbone stays frozen): use {option} instead"
            )


def add_freeze_arguments(parser: ArgumentParser | Any, skip: set[str] = frozenset()) -> None:
    """``--freeze.*``: set on the FreezeFeatures in ``--trainer.callbacks``, or on one added for them
    (``--trainer.callbacks.<option>`` would apply to the last callback in the list only)."""
    group = parser.add_argument_group(
        "Freezing, stage two's FreezeFeatures (--freeze.*)",
        "With any --trainer.callbacks; alone, each turns freezing on.",
    )
    for name, doc in ((n, d) for n, d in FREEZE_HELP.items() if n not in skip):
        group.add_argument(f"--freeze.{name}", type=FREEZE_TYPES[name], default=None, help=doc)


def add_speed_arguments(parser: ArgumentParser | Any) -> None:
    """``--speed.feature_cache``: the one speed path with a switch (``lit_transfer/callbacks/feature_cache.py``)."""
    parser.add_argument(
        "--speed.feature_cache",
        type=bool,
        default=True,
        help="While the backbone is frozen, compute its features once per split and train the head on them "
        "(dropout still applied on the fly); same result, less work. false: every batch through the backbone.",
    )


def merge_freeze_options(config: Namespace) -> None:
    """``--freeze.*`` set on the FreezeFeatures in ``--trainer.callbacks``, or on one added for them."""
    values = {name: config.freeze[name] for name in FREEZE_HELP if config.freeze[name] is not None}
    if not values:
        return
    callbacks = config.trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    ours = [c for c in callbacks if c.class_path.rpartition(".")[2] == FreezeFeatures.__name__]
    if not ours:  # --freeze.* on its own turns freezing on
        ours = [Namespace(class_path="lit_transfer.FreezeFeatures", init_args=Namespace())]
        callbacks.append(ours[0])
    for name, value in values.items():
        ours[0].init_args[name] = value
    config.trainer.callbacks = callbacks
