"""Our checkpoints: written atomically, read only with PyTorch's weights-only unpickler, and recognisable.

Every checkpoint this package writes carries ``checkpoint[MARKER]`` (written by the ``CheckpointMarker``
callback): which dataset and digits it was trained on and whether its backbone was frozen. That tells the command
line whether a ``--ckpt_path`` continues the same stage (resume) or starts the next one (transfer). Checkpoints
written before the layers had names (``backbone.0.weight`` for ``backbone.conv1.weight``, ...) are read with
today's names. ``copy_weights`` is the transfer itself: a checkpoint's layers into a network.
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
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_transfer.errors import UserError, count
from lit_transfer.files import atomic_write
from lit_transfer.model import WEIGHT_LAYERS, Backbone, Head, has_batch_norm, weight_layers

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


def same_stage(ckpt_path: str, data: L.LightningDataModule, trainer: L.Trainer) -> bool:
    """Whether the checkpoint continues this run's stage (same dataset, classes and freezing: resume) or comes
    from another stage (transfer its weights)."""
    meta = require_ours(load_checkpoint(ckpt_path), ckpt_path)
    here = (data.dataset, data.class_names, frozen_stage(trainer))
    return (meta.get("dataset"), class_names(meta), meta.get("frozen_stage")) == here


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
    """Writes through ``files.atomic_write`` (a temporary file, flushed, renamed over ``<file>``): a crash leaves the
    old file intact.

    Lightning's own writer goes through fsspec, whose local "transaction" writes to the system temp dir and moves
    the file (a copy, not an atomic rename, when /tmp is another filesystem). Loading goes through
    :func:`load_checkpoint`, so resuming is weights-only too.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        checkpoint = load_checkpoint(path, map_location=map_location or "cpu")
        require_ours(checkpoint, path)
        return checkpoint


def load_network(path: str | os.PathLike) -> tuple[Backbone, Head, dict[str, Any]]:
    """The network a checkpoint of ours holds, as it was trained (its own head width), in evaluation mode with its
    weights frozen, and the checkpoint's marker. The one way a checkpoint becomes a network: transfer, evaluation,
    export and the demo all read through here. Read weights-only and loaded strictly: a missing or misshapen layer
    means another architecture, and any other file, a one-line ``UserError``."""
    checkpoint = load_checkpoint(path)
    meta = require_ours(checkpoint, path)
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("backbone.", "head."))}
    fc2 = weights.get("head.fc2.weight")
    width = fc2.shape[0] if fc2 is not None and fc2.dim() == 2 else int(meta.get("num_classes") or 1)
    network = nn.ModuleDict({"backbone": Backbone(has_batch_norm(weights)), "head": Head(width)})
    try:
        network.load_state_dict(weights)
    except RuntimeError:
        raise UserError(
            f"the weights in {path} do not fit this model (different layers or shapes): "
            "pass a checkpoint of lit_transfer's network"
        ) from None
    network.eval().requires_grad_(False)
    return network["backbone"], network["head"], meta


def copy_weights(path: str, backbone: Backbone, head: Head, transfer_layers: int | None = None) -> None:
    """Copy the backbone (and the head, when it fits) of the checkpoint at ``path`` into ``backbone`` and
    ``head``, or its first ``transfer_layers`` weight layers (1 = conv1 ... 4 = fc2)."""
    source_backbone, source_head, meta = load_network(path)
    pairs = list(zip(weight_layers(source_backbone, source_head), weight_layers(backbone, head), strict=True))
    if transfer_layers is not None:
        pairs = pairs[:transfer_layers]
    if (theirs := hasattr(source_backbone, "bn1")) != hasattr(backbone, "bn1"):
        raise UserError(
            f"the backbone in {path} was trained {'with' if theirs else 'without'} BatchNorm layers: give "
            f"--model.batch_norm {str(theirs).lower()} to transfer from it"
        )
    copied = []
    for i, (src, dst) in enumerate(pairs):
        if src.weight.shape == dst.weight.shape:
            dst.load_state_dict(src.state_dict())
            copied.append(WEIGHT_LAYERS[i])
            if i < 2 and hasattr(backbone, f"bn{i + 1}"):  # the conv's BatchNorm: weights and running statistics
                getattr(backbone, f"bn{i + 1}").load_state_dict(getattr(source_backbone, f"bn{i + 1}").state_dict())
                copied.append(f"bn{i + 1}")
        elif i < 2 or transfer_layers is not None:  # the backbone must fit; so must layers asked for
            raise UserError(f"layer {i + 1} in {path} has another shape than this model's: transfer fewer layers")
    note = ", ".join(copied)
    if "fc2" not in copied and transfer_layers is None:
        note += (
            f"; its head has {count(meta.get('num_classes'), 'class', 'classes')} and this model {head.num_classes}, "
            "so the last layer is newly initialised"
        )
    rank_zero_info(f"lit_transfer: transferred {note} from {path} (classes {', '.join(class_names(meta))})")
