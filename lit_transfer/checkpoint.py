"""Our checkpoints: written atomically, read only with PyTorch's weights-only unpickler, and recognisable.

Every checkpoint this package writes carries ``checkpoint[MARKER]``: which dataset and digits it was trained on
and whether its backbone was frozen. That tells the command line whether a ``--ckpt_path`` continues the same
stage (resume) or starts the next one (transfer). Checkpoints written before the layers had names
(``backbone.0.weight`` for ``backbone.conv1.weight``, ...) are read with today's names.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_transfer.errors import UserError

MARKER = "lit_transfer"
FORMAT = 1
# The layers' positions in the nn.Sequential before they had names (lit_transfer before 2026-12): old -> new prefix
POSITIONAL_NAMES = {
    "backbone.0.": "backbone.conv1.",
    "backbone.2.": "backbone.conv2.",
    "head.0.": "head.fc1.",
    "head.3.": "head.fc2.",
}


def frozen_stage(trainer: L.Trainer) -> bool:
    """Whether this run freezes layers (a ``BaseFinetuning`` callback such as ``FreezeFeatures``): what tells a
    stage-two checkpoint from a stage-one one."""
    return any(isinstance(cb, BaseFinetuning) for cb in trainer.callbacks)


def named_layer(key: str) -> str:
    """A parameter's name with a positional layer renamed to today's layer name (other names as they are)."""
    old = next((p for p in POSITIONAL_NAMES if key.startswith(p)), None)
    return POSITIONAL_NAMES[old] + key[len(old) :] if old else key


def rename_positional_layers(checkpoint: dict[str, Any]) -> None:
    """Where a checkpoint names parameters: its weights, and the parameter groups BaseFinetuning callbacks keep."""
    if isinstance(checkpoint.get("state_dict"), dict):
        checkpoint["state_dict"] = {named_layer(k): v for k, v in checkpoint["state_dict"].items()}
    for state in (checkpoint.get("callbacks") or {}).values():
        groups = state.get("internal_optimizer_metadata", {}) if isinstance(state, dict) else {}
        for group in (g for per_optimizer in groups.values() for g in per_optimizer):
            group["params"] = [named_layer(name) for name in group["params"]]


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only, so a file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass the path of a .ckpt file (see the run's output)")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise UserError(f"{path} is not a readable PyTorch checkpoint: pass a .ckpt file written by lit_transfer")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"it refers to {found.group(1)}" if found else "it holds objects other than tensors and plain values"
        raise UserError(
            f"refused to load {path}: {what}, which could run code when unpickled; "
            "only checkpoints written by lit_transfer (tensors and plain values) can be loaded"
        ) from None
    except Exception as err:  # truncated zip, not a torch file at all, ...
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}): "
            "pass a .ckpt file written by lit_transfer"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not a lit_transfer checkpoint: pass a .ckpt file written by lit_transfer")
    rename_positional_layers(checkpoint)
    return checkpoint


def class_names(meta: dict[str, Any]) -> list[str]:
    """The real names of a checkpoint's classes, in label order: its ``classes`` (image folders) or its digits."""
    return [str(c) for c in meta.get("classes") or meta.get("digits") or []]


def require_ours(checkpoint: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Return the checkpoint's ``MARKER`` entry, or fail with a clear error for foreign files."""
    meta = checkpoint.get(MARKER)
    if not isinstance(meta, dict) or "state_dict" not in checkpoint:
        raise UserError(
            f"{path} is not a lit_transfer checkpoint (no '{MARKER}' entry): "
            "pass a .ckpt file from a lit_transfer run's checkpoints/ folder"
        )
    if meta.get("format", 0) > FORMAT:
        raise UserError(f"{path} was written by a newer lit_transfer (format {meta['format']}): upgrade")
    return meta


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``<file>.tmp``, fsyncs it, then renames it over ``<file>``: a crash leaves the old file intact.

    Lightning's own writer goes through fsspec, whose local "transaction" writes to the system temp dir and moves
    the file (a copy, not an atomic rename, when /tmp is another filesystem). Loading goes through
    :func:`load_checkpoint`, so resuming is weights-only too.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        checkpoint = load_checkpoint(path, map_location=map_location or "cpu")
        require_ours(checkpoint, path)
        return checkpoint
