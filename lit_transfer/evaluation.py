"""``test``, ``validate`` and ``predict`` evaluate a checkpoint on the data it was trained for.

A checkpoint knows its dataset and digits (its ``lit_transfer`` marker). Unless the command line names other
ones (``--data.digits``, ``--data.dataset``), the evaluation uses the checkpoint's, whatever the config file says:
``test --config configs/pretrain.yaml --ckpt_path <a 0-4 checkpoint>`` tests digits 0-4, not a 0-4 model on 5-9.
Explicit digits for a head of another width, or another dataset, are a contradiction and stop with one line.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.checkpoint import load_checkpoint, require_ours
from lit_transfer.errors import UserError
from lit_transfer.predict_files import find_images


def refuse_shorthand(ckpt_path: str | None) -> None:
    # Lightning's "last" and "best" look in this process's run folder, which is new for every command here.
    if ckpt_path in ("last", "best"):
        raise UserError(
            f"--ckpt_path {ckpt_path} would look in this command's own new run folder: pass the checkpoint's path, "
            "e.g. runs/pretrain/version_0/checkpoints/last.ckpt (each stage prints it)"
        )


def folder_classes(ckpt_path: str | None) -> list[str] | None:
    """An image-folder checkpoint's own classes in its own label order, for evaluating it: a class folder added
    since must not shift the labels, and predict on files needs no data folder at all."""
    refuse_shorthand(ckpt_path)
    if ckpt_path in (None, "hpc", "registry"):
        return None
    return require_ours(load_checkpoint(ckpt_path), ckpt_path).get("classes")


def prepare(
    subcommand: str, ckpt_path: str | None, model: L.LightningModule, data: Any, given: set[str]
) -> L.LightningModule:
    """Check the checkpoint and set ``data`` to its dataset and digits unless ``given`` (the ``--data.*`` options
    on the command line) names others; returns the model to evaluate (rebuilt when the head's width changes)."""
    refuse_shorthand(ckpt_path)
    if ckpt_path is None:
        rank_zero_info(f"lit_transfer: warning: no --ckpt_path: {subcommand} uses randomly initialised weights")
    if ckpt_path not in (None, "hpc", "registry"):
        model = with_checkpoint(subcommand, ckpt_path, model, data, given)
    # Missing data or no image to predict fails here, before the trainer starts its loggers in the run folder.
    if subcommand == "predict" and data.predict_path is not None:
        find_images(data.predict_path)
    else:
        data.prepare_data()
    return model


def with_checkpoint(
    subcommand: str, ckpt_path: str, model: L.LightningModule, data: Any, given: set[str]
) -> L.LightningModule:
    """``prepare``'s checks and settings for a checkpoint file."""
    state = load_checkpoint(ckpt_path)
    meta = require_ours(state, ckpt_path)
    dataset, digits = meta.get("dataset"), meta.get("digits")
    mixed = (dataset == "folder") != (data.dataset == "folder")  # an image-folder checkpoint and digit data, or back
    if mixed and data.predict_path is None:
        fix = (
            "--data FolderDataModule --data.data_dir <its folder> (or --config configs/folder_finetune.yaml)"
            if dataset == "folder"
            else "its digits' config (e.g. --config configs/pretrain.yaml)"
        )
        raise UserError(f"{ckpt_path} was trained on {dataset}, not on this data: evaluate it with {fix}")
    if not mixed and dataset != "folder":
        if dataset and dataset != data.dataset:
            if "dataset" in given:
                raise UserError(
                    f"{ckpt_path} was trained on {dataset}, not {data.dataset}: leave out --data.dataset to evaluate "
                    "it on its own dataset"
                )
            data.dataset = data.hparams.dataset = dataset
        if digits and list(digits) != list(data.digits):
            if "digits" not in given:
                rank_zero_info(f"lit_transfer: {subcommand} on the checkpoint's digits {list(digits)} ({dataset})")
                data.digits = data.hparams.digits = list(digits)
            elif len(data.digits) != len(digits):
                raise UserError(
                    f"{ckpt_path} has a head for {len(digits)} digits {list(digits)}, and --data.digits gives "
                    f"{len(data.digits)}: give {len(digits)} digits, or leave out --data.digits to use its own"
                )
    # The head follows the data's classes (as the CLI links them); predict on files follows the checkpoint's.
    width = meta.get("num_classes") or data.num_classes if mixed else data.num_classes
    if model.hparams.num_classes != width:
        model = type(model)(**{**model.hparams, "num_classes": width})
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in state["state_dict"].items()}
    if found != expected:
        raise UserError(
            f"{ckpt_path} does not fit this model (different layers or shapes): pass a checkpoint written by "
            "lit_transfer's TransferModule"
        )
    return model
