"""The two stages' models on one image: class probabilities and the frozen layers' feature maps through each.

A model is loaded as ``predict`` runs it (``TransferModule`` from a weights-only checkpoint, evaluation mode, the
CPU's fast layers swapped in by ``to_fast_cpu_layers`` as the FastCpuLayers callback does, the probabilities of
``predict_step``), so the page shows the probabilities ``predict`` writes for the same image file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_transfer.checkpoint import class_names, load_checkpoint, require_ours
from lit_transfer.errors import UserError
from lit_transfer.module import TransferModule
from lit_transfer.speed.layers import to_fast_cpu_layers

SHARED_LAYERS = ("conv1", "conv2")  # the frozen feature layers whose maps the page shows


@dataclass
class Model:
    """One stage's network, loaded for inference."""

    path: Path
    meta: dict[str, Any]
    names: list[str]  # the real class names, in label order
    module: TransferModule

    @property
    def frozen_stage(self) -> bool:
        return bool(self.meta.get("frozen_stage"))


@dataclass
class Output:
    """One model's answer for one image."""

    probabilities: Tensor  # (classes,), float32
    maps: dict[str, Tensor]  # layer name -> its raw output (32, H, W), before the ReLU


def load_model(path: str | os.PathLike) -> Model:
    """A checkpoint of ours as a network ready for inference; anything else is a one-line ``UserError``."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    meta = require_ours(checkpoint, path)
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("backbone.", "head."))}
    fc2 = weights.get("head.fc2.weight")
    if fc2 is None or fc2.dim() != 2:
        raise UserError(f"{path} holds no classifier head (head.fc2): pass a .ckpt file written by lit_transfer fit")
    module = TransferModule(num_classes=fc2.shape[0])
    try:
        module.load_state_dict(weights)
    except RuntimeError:
        raise UserError(
            f"the weights in {path} do not fit lit_transfer's CNN (different layers or shapes): "
            "pass a checkpoint of this model"
        ) from None
    module.eval().requires_grad_(False)
    to_fast_cpu_layers(module)  # as the command line does on the CPU (FastCpuLayers), so predict's numbers come out
    names = class_names(meta)
    if len(names) != fc2.shape[0]:
        names = [str(i) for i in range(fc2.shape[0])]
    return Model(path, meta, names, module)


@torch.inference_mode()
def run(model: Model, image: Tensor) -> Output:
    """``image``: the network's uint8 (28, 28) input. The probabilities as ``predict_step`` computes them; the
    shared layers' outputs caught on the way by forward hooks."""
    maps: dict[str, Tensor] = {}
    backbone = model.module.backbone
    hooks = [
        getattr(backbone, name).register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out[0]))
        for name in SHARED_LAYERS
    ]
    try:
        probabilities = model.module(image.unsqueeze(0)).float().softmax(1)[0]
    finally:
        for hook in hooks:
            hook.remove()
    return Output(probabilities, {name: m.contiguous() for name, m in maps.items()})
