"""``test``, ``validate`` and ``predict`` evaluate a checkpoint on the data it was trained for.

A checkpoint knows its dataset and classes (its ``lit_transfer`` marker). Unless the command line names other
ones (``--data.digits``, ``--data.dataset``, ``--data.classes``), the evaluation uses the checkpoint's, whatever the
config file says, and says so on its first line: ``test --config configs/pretrain.yaml --ckpt_path <a 0-4
checkpoint>`` tests digits 0-4, not a 0-4 model on 5-9, and writes beside that checkpoint's own runs. Classes given
for a head of another width, or another kind of data, are a contradiction and stop with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.checkpoint import class_names, load_checkpoint, load_network, require_ours
from lit_transfer.errors import UserError, count
from lit_transfer.images.files import find_images
from lit_transfer.model import has_batch_norm


def refuse_shorthand(ckpt_path: str | None) -> None:
    # Lightning's "last" and "best" look in this process's run folder, which is new for every command here.
    if ckpt_path in ("last", "best"):
        raise UserError(
            f"--ckpt_path {ckpt_path} would look in this command's own new run folder: pass the checkpoint's path, "
            "e.g. runs/pretrain/latest/checkpoints/last.ckpt (stage one's newest finished run; each run prints its own)"
        )


def configure(subcommand: str, config: Namespace, given: set[str]) -> None:
    """Before anything is built: the data settings of the checkpoint's own classes (``given``: the ``--data.*``
    options on the command line, which win), a first line naming the checkpoint's classes where they differ from
    the config's, and a refusal where the two cannot go together."""
    ckpt_path = config.get("ckpt_path")
    refuse_shorthand(ckpt_path)
    if ckpt_path is None:
        rank_zero_info(f"lit_transfer: warning: no --ckpt_path: {subcommand} uses randomly initialised weights")
    if ckpt_path in (None, "hpc", "registry"):
        return
    checkpoint = load_checkpoint(ckpt_path)
    meta = require_ours(checkpoint, ckpt_path)
    # The network the checkpoint holds: with BatchNorm layers or without, whatever the config says
    config.model.batch_norm = has_batch_norm(checkpoint["state_dict"])
    data, names, dataset = config.data.init_args, class_names(meta), meta.get("dataset")
    folder_data = config.data.class_path.endswith("FolderDataModule")
    if folder_data != (dataset == "folder"):  # an image-folder checkpoint and digits, or back
        if subcommand != "predict" or data.get("predict_path") is None:
            fix = (
                "--data FolderDataModule --data.data_dir <its folder> (or --config configs/folder_finetune.yaml)"
                if dataset == "folder"
                else "its digits' config (e.g. --config configs/pretrain.yaml)"
            )
            raise UserError(f"{ckpt_path} was trained on {dataset}, not on this data: evaluate it with {fix}")
        say(f"{subcommand} with the checkpoint's classes {', '.join(names)} ({dataset}); the config's are not used")
        if folder_data:  # the outputs' names: predicting on files reads no class folder
            data.classes = names
    elif folder_data:
        ours = None if data.classes is None else [str(c) for c in data.classes]
        if ours is None:  # its own classes in its own label order (a class folder added since shifts nothing)
            data.classes = names or None  # a checkpoint that names none: the folder's
        elif ours != names:
            if len(ours) != len(names):
                raise mismatch(ckpt_path, names, ours, "--data.classes")
            say(f"{subcommand} with --data.classes {', '.join(ours)}; the checkpoint was trained on {', '.join(names)}")
    else:
        if dataset and dataset != data.dataset:
            if "dataset" in given:
                raise UserError(
                    f"{ckpt_path} was trained on {dataset}, not {data.dataset}: leave out --data.dataset to evaluate "
                    "it on its own dataset"
                )
            say(f"{subcommand} on the checkpoint's dataset {dataset}, not the config's {data.dataset}")
            data.dataset = dataset
        digits = [int(d) for d in meta.get("digits") or []]
        if digits and digits != list(data.digits):
            if "digits" not in given:
                say(f"{subcommand} on the checkpoint's digits {digits} ({dataset}), not the config's {data.digits}")
                data.digits = digits
            elif len(data.digits) != len(digits):
                raise mismatch(ckpt_path, names, [str(d) for d in data.digits], "--data.digits")
            else:  # the head's outputs read as the digits given, in their order
                say(f"{subcommand} with --data.digits {list(data.digits)}; the checkpoint was trained on {digits}")


def mismatch(ckpt_path: str, names: list[str], given: list[str], option: str) -> UserError:
    return UserError(
        f"{ckpt_path} has a head for {count(len(names), 'class', 'classes')} ({', '.join(names)}) and {option} gives "
        f"{len(given)} "
        f"({', '.join(given)}): give {len(names)}, or leave out {option} to use the checkpoint's own"
    )


def say(message: str) -> None:
    rank_zero_info(f"lit_transfer: {message}")


def run_root(ckpt_path: str | None) -> Path | None:
    """The stage folder of a checkpoint in a run folder (``runs/finetune`` for
    ``runs/finetune/version_3/checkpoints/last.ckpt``): where its evaluations go."""
    if not ckpt_path or ckpt_path in ("hpc", "registry"):
        return None
    path = Path(ckpt_path)
    if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
        return path.parent.parent.parent
    return None


def prepare(subcommand: str, ckpt_path: str | None, model: L.LightningModule, data: Any) -> L.LightningModule:
    """After the data and model are built: the model to evaluate (with the checkpoint's head width where its
    classes name the outputs), checked against the checkpoint's weights; missing data fails here, before the
    trainer starts its loggers in the run folder."""
    if ckpt_path not in (None, "hpc", "registry"):
        _, head, meta = load_network(ckpt_path)  # another architecture stops here, in one line
        width, names = head.num_classes, class_names(meta)
        if data.num_classes != width and subcommand == "predict" and data.predict_path is not None:
            settings = {k: v for k, v in model.hparams.items() if not k.startswith("_")}  # not LightningCLI's own
            model = type(model)(**{**settings, "num_classes": width})  # predict on files: the checkpoint's own
        if model.hparams.num_classes != width:  # a checkpoint that names no classes: configure() kept the config's
            names = names or [str(i) for i in range(width)]
            option = "--data.digits" if hasattr(data, "digits") else "--data.classes"
            raise UserError(
                f"{ckpt_path} has a head for {count(width, 'class', 'classes')} ({', '.join(names)}) and the data has "
                f"{len(data.class_names)} ({', '.join(data.class_names)}): choose {width} with {option}"
            )
    if subcommand == "predict" and data.predict_path is not None:
        find_images(data.predict_path)
    else:
        data.prepare_data()
    return model
