"""``python -m lit_transfer export``: a checkpoint as one ONNX or TorchScript file, from images to probabilities.

The file maps a float32 batch ``(N, 1, 28, 28)`` (each pixel / 255, a light digit on a dark background: the image
rule of docs/own-data.md, ``lit_transfer.images.load_mnist``, makes such images from any image file) to ``(N, k)``
class probabilities, column ``i`` for class ``i``. The class names and that input convention travel inside the file
(ONNX ``metadata_props``, TorchScript extra files), so the file alone is enough to use the model.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from lit_transfer.checkpoint import class_names, load_checkpoint, require_ours
from lit_transfer.errors import UserError
from lit_transfer.model import Backbone, Head
from lit_transfer.speed.layers import GradLayoutFlatten, to_notebook_layers

INPUT = (
    "images: float32 (N, 1, 28, 28), each pixel / 255, a light digit on a dark background (MNIST's convention; "
    "lit_transfer.images.load_mnist(path) gives such an image as uint8 (28, 28) from any image file)"
)
OUTPUT = "probabilities: float32 (N, k), softmax over the classes; column i is classes[i]"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
SNIPPET = {
    "onnx": (
        "import json, onnxruntime\n"
        'model = onnxruntime.InferenceSession("{path}"); '
        'classes = json.loads(model.get_modelmeta().custom_metadata_map["classes"])\n'
        'probabilities = model.run(None, {{"images": images}})[0]  # images: float32 numpy (N, 1, 28, 28), pixel / 255'
    ),
    "torchscript": (
        "import json, torch\n"
        'extra = {{"classes": ""}}; model = torch.jit.load("{path}", _extra_files=extra); '
        'classes = json.loads(extra["classes"])\n'
        "probabilities = model(images)  # images: float32 tensor (N, 1, 28, 28), pixel / 255"
    ),
}


class Probabilities(nn.Module):
    """The network in evaluation mode, ending in a softmax: what the exported file computes."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images)).softmax(1)


def probabilities_model(module: nn.Module) -> Probabilities:
    """A copy of ``module``'s backbone and head (a ``TransferModule`` or anything with both), with the notebook's
    layers: the fast CPU layers' custom autograd function cannot be exported or scripted."""
    model = Probabilities(copy.deepcopy(module.backbone), copy.deepcopy(module.head))
    if isinstance(model.backbone.flatten, GradLayoutFlatten):
        to_notebook_layers(model)
    return model.eval()


def from_checkpoint(path: str | os.PathLike) -> tuple[Probabilities, dict]:
    """The checkpoint's network (loaded weights-only) and its marker."""
    checkpoint = load_checkpoint(path)
    meta = require_ours(checkpoint, path)
    weights = checkpoint["state_dict"]
    if "head.fc2.weight" not in weights:
        raise UserError(f"{path} holds no head (head.fc2.weight): export a checkpoint of a lit_transfer training run")
    net = nn.Module()
    net.backbone, net.head = Backbone(), Head(weights["head.fc2.weight"].shape[0])
    try:
        net.load_state_dict({k: v for k, v in weights.items() if k.startswith(("backbone.", "head."))})
    except RuntimeError:
        raise UserError(
            f"the weights in {path} do not fit lit_transfer's network: export one of its checkpoints"
        ) from None
    return probabilities_model(net), meta


def export(ckpt_path: str, format: Literal["onnx", "torchscript"] = "onnx", output: str | None = None) -> Path:
    """Write the checkpoint's network as one file that maps images to class probabilities.

    Args:
        ckpt_path: A lit_transfer checkpoint (e.g. runs/folder_finetune/version_0/checkpoints/last.ckpt).
        format: ``onnx`` (for ONNX Runtime and other ONNX tools) or ``torchscript`` (``torch.jit.load``).
        output: The file to write (never replaced if it exists); default: beside the checkpoint, with the
            checkpoint's name and ``.onnx`` or ``.pt``.
    """
    model, meta = from_checkpoint(ckpt_path)
    names = class_names(meta) or [str(i) for i in range(model.head.num_classes)]
    target = Path(output) if output else Path(ckpt_path).with_suffix(SUFFIX[format])
    if target.exists():
        raise UserError(f"{target} already exists: pass another --output (export never replaces a file)")
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist: create it or pass another --output")
    info = {
        "classes": json.dumps(names),
        "input": INPUT,
        "output": OUTPUT,
        "checkpoint": str(ckpt_path),
        "dataset": str(meta.get("dataset")),
    }
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        (write_onnx if format == "onnx" else write_torchscript)(model, info, tmp)
        os.link(tmp, target)  # fails if the file appeared meanwhile: never replaces one
    except FileExistsError:
        raise UserError(f"{target} already exists: pass another --output (export never replaces a file)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_onnx(model: Probabilities, info: dict[str, str], path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the export extra: pip install 'lit_transfer[export]'") from None
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch")
    # torch's exporter (torch.export based; it needs onnxscript, which the export extra installs), any batch size
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def write_torchscript(model: Probabilities, info: dict[str, str], path: Path) -> None:
    with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; it is what this format asks for
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files=info)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m lit_transfer export", description=(__doc__ or "").split("\n\n")[0], exit_on_error=False
    )
    parser.add_function_arguments(export)
    return parser


def main(args: list[str] | None = None) -> Path:
    try:
        config = build_parser().parse_args(args)
        path = export(**config.as_dict())
    except UserError as err:
        sys.exit(f"lit_transfer export: error: {err}")
    except ArgumentError as err:  # jsonargparse's parse errors, shown on one line
        sys.exit("lit_transfer export: error: " + " ".join(line.strip() for line in str(err).splitlines()))
    print(f"wrote {path}: {OUTPUT}")
    print(f"load it in Python ({INPUT}):")
    print(SNIPPET[config.format].format(path=path))
    return path
