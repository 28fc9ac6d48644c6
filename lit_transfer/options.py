"""The command line's options beyond LightningCLI's own: ``--freeze.*`` merged into ``--trainer.callbacks``, the
top-level ``--optimizer`` refused, and the image-folder form of lit_transfer 0.1 (``--data.dataset folder``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser, Namespace

from lit_transfer.callbacks import FreezeFeatures
from lit_transfer.errors import UserError

FREEZE_HELP = {
    "depth": "FreezeFeatures: weight layers to freeze, from the input (1-3; 2 is the backbone).",
    "unfreeze_at_epoch": "FreezeFeatures: epoch at which the frozen layers join training (gradual unfreezing).",
    "backbone_lr_factor": "FreezeFeatures: learning rate of the unfrozen layers relative to the head's.",
}
FREEZE_TYPES = {"depth": int | None, "unfreeze_at_epoch": int | None, "backbone_lr_factor": float | None}


def refuse_top_level_optimizer(config: Namespace) -> None:
    """LightningCLI's ``--optimizer``/``--lr_scheduler`` would replace the module's ``configure_optimizers``."""
    for key, option in (("optimizer", "--model.optimizer"), ("lr_scheduler", "--model.lr_scheduler")):
        if config.get(key) is not None:
            raise UserError(
                f"--{key} would replace the module's configure_optimizers (which gives the optimizer only the "
                f"trainable parameters, so a frozen backbone stays frozen): use {option} instead"
            )


def add_freeze_arguments(parser: ArgumentParser) -> None:
    """``--freeze.*``: set on the FreezeFeatures in ``--trainer.callbacks``, or on one added for them
    (``--trainer.callbacks.<option>`` would apply to the last callback in the list only)."""
    note = " Works whatever else is in --trainer.callbacks; on its own, turns freezing on."
    for name, doc in FREEZE_HELP.items():
        parser.add_argument(f"--freeze.{name}", type=FREEZE_TYPES[name], default=None, help=doc + note)


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


def legacy_folder_args(args: list[str]) -> list[str]:
    """Before image folders had their own DataModule (lit_transfer 0.1), ``--data.dataset folder`` chose them: still
    understood on the command line; a config file written that way gets a one-line error with the new form."""
    configs = [v for k, v in itertools.pairwise(args) if k == "--config"]
    configs += [a.removeprefix("--config=") for a in args if a.startswith("--config=")]
    for path in configs:
        data = (yaml.safe_load(Path(path).read_text()) or {}).get("data") if Path(path).is_file() else None
        if isinstance(data, dict) and data.get("dataset") == "folder" and "class_path" not in data:
            raise UserError(
                f"{path} chooses image folders with 'dataset: folder' under 'data:', the form of lit_transfer 0.1: "
                "write 'class_path: lit_transfer.FolderDataModule' there and the other data settings under "
                "'init_args:' (as configs/folder_finetune.yaml does)"
            )
    out, i = [], 0
    while i < len(args):
        if args[i] in ("--data.dataset=folder", "--data.dataset") and (
            args[i] == "--data.dataset=folder" or (i + 1 < len(args) and args[i + 1] == "folder")
        ):
            out.append("--data=lit_transfer.FolderDataModule")
            i += 1 if "=" in args[i] else 2
            continue
        out.append(args[i])
        i += 1
    return out
