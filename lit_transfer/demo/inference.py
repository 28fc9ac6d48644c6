"""The two stages' models on one image: class probabilities and the frozen layers' feature maps through each.

A model is loaded as ``predict`` runs it (``TransferModule`` with the weights ``checkpoint.load_network`` reads,
evaluation mode, channels-last weights on the CPU as ``TransferModule.setup`` makes them, the probabilities of
``predict_step``), so the page shows the probabilities ``predict`` writes for the same image file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_transfer.checkpoint import class_names, load_network
from lit_transfer.module import TransferModule

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
    """A checkpoint of ours as a network ready for inference (``checkpoint.load_network``); anything else is a
    one-line ``UserError``."""
    path = Path(path)
    backbone, head, meta = load_network(path)
    module = TransferModule(num_classes=head.num_classes, batch_norm=hasattr(backbone, "bn1"))
    module.backbone.load_state_dict(backbone.state_dict())
    module.head.load_state_dict(head.state_dict())
    module.eval().requires_grad_(False)
    module.use_layout_for(torch.device("cpu"))  # as predict computes on the CPU: the page shows predict's numbers
    names = class_names(meta)
    if len(names) != head.num_classes:
        names = [str(i) for i in range(head.num_classes)]
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
