"""``python -m lit_transfer export``: a checkpoint as a file for torch.export, ONNX, safetensors or TorchScript.

The network maps a float32 batch ``(N, 1, 28, 28)`` (each pixel / 255, a light digit on a dark background: the
image rule of docs/own-data.md, ``lit_transfer.images.load_mnist``, makes such images from any image file) to
``(N, k)`` class probabilities, column ``i`` for class ``i``. The class names and that input convention travel with
it (``torch.export`` extra files, ONNX ``metadata_props``, the safetensors header and a JSON file beside it,
TorchScript extra files), so the export alone is enough to use the model.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from lit_transfer.checkpoint import class_names, load_network
from lit_transfer.command_line import run_dirs
from lit_transfer.errors import UserError
from lit_transfer.model import Backbone, Head, has_batch_norm

INPUT = (
    "images: float32 (N, 1, 28, 28), each pixel / 255, a light digit on a dark background (MNIST's convention; "
    "lit_transfer.images.load_mnist(path) gives such an image as uint8 (28, 28) from any image file)"
)
OUTPUT = "probabilities: float32 (N, k), softmax over the classes; column i is classes[i]"
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "safetensors": ".safetensors", "torchscript": ".pt"}
SNIPPET = {
    "pt2": (
        "import json, torch\n"
        'extra = {{"classes": ""}}; model = torch.export.load("{path}", extra_files=extra).module(); '
        'classes = json.loads(extra["classes"])\n'
        "probabilities = model(images)  # images: float32 tensor (N, 1, 28, 28), pixel / 255"
    ),
    "safetensors": (
        "from lit_transfer.export import load_safetensors\n"
        'model, info = load_safetensors("{path}"); classes = info["classes"]  # info: the JSON file beside it\n'
        "probabilities = model(images)  # images: float32 tensor (N, 1, 28, 28), pixel / 255"
    ),
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
DEPRECATED = {"torchscript": "TorchScript is deprecated upstream: PyTorch recommends torch.export (--format pt2)"}


class Probabilities(nn.Module):
    """The network in evaluation mode, ending in a softmax: what the exported file computes."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images)).softmax(1)


def probabilities_model(module: nn.Module) -> Probabilities:
    """A copy of ``module``'s backbone and head (a ``TransferModule`` or anything with both), in evaluation mode."""
    model = Probabilities(copy.deepcopy(module.backbone), copy.deepcopy(module.head))
    return model.eval().requires_grad_(False)


def from_checkpoint(path: str | os.PathLike) -> tuple[Probabilities, dict]:
    """The checkpoint's network (``checkpoint.load_network``) and its marker."""
    backbone, head, meta = load_network(path)
    return Probabilities(backbone, head).eval(), meta


Format = Literal["pt2", "onnx", "safetensors", "torchscript", "web"]


def export(ckpt_path: str, format: Format = "onnx", output: str | None = None, source_ckpt: str | None = None) -> Path:
    """Write the checkpoint's network as a file that maps images to class probabilities.

    Args:
        ckpt_path: A lit_transfer checkpoint (e.g. runs/folder_finetune/version_0/checkpoints/last.ckpt).
        format: ``pt2`` (``torch.export``, PyTorch's recommended format: ``torch.export.load``, no lit_transfer
            needed), ``onnx`` (ONNX Runtime and other ONNX tools), ``safetensors`` (the weights only, plus a JSON
            file beside them with the classes, the input rule and the architecture) or ``torchscript``
            (``torch.jit.load``; deprecated upstream, PyTorch recommends torch.export: use ``pt2``), or ``web``: a
            folder with a page that runs both stages and teaches new symbols in any browser, offline
            (docs/web.md); ``--ckpt_path`` is then stage two's checkpoint.
        output: The file to write (never replaced if it exists); default: beside the checkpoint, with the
            checkpoint's name and ``.pt2``, ``.onnx``, ``.safetensors`` or ``.pt`` (safetensors: and ``.json``;
            web: the folder ``<name>-web``).
        source_ckpt: web only: stage one's checkpoint; default: the one stage two was trained from.
    """
    # runs/<stage>/latest/... -> runs/<stage>/version_<n>/...: the export records the run it came from
    ckpt_path = run_dirs.follow_latest(ckpt_path) or ckpt_path
    if format == "web":
        from lit_transfer.export.web import write_web

        default = Path(ckpt_path).with_name(Path(ckpt_path).stem + "-web")
        return write_web(ckpt_path, source_ckpt, Path(output) if output else default)
    if source_ckpt is not None:
        raise UserError("--source_ckpt is for --format web only: leave it out")
    model, meta = from_checkpoint(ckpt_path)
    names = class_names(meta) or [str(i) for i in range(model.head.num_classes)]
    target = Path(output) if output else Path(ckpt_path).with_suffix(SUFFIX[format])
    targets = [target, target.with_suffix(".json")] if format == "safetensors" else [target]
    for path in targets:
        if path.exists():
            raise UserError(f"{path} already exists: pass another --output (export never replaces a file)")
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist: create it or pass another --output")
    info = {
        "classes": json.dumps(names),
        "input": INPUT,
        "output": OUTPUT,
        "checkpoint": str(ckpt_path),
        "dataset": str(meta.get("dataset")),
    }
    # the same suffix: torch.export.save warns about a file name not ending in .pt2
    tmps = [path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}") for path in targets]
    linked: list[Path] = []
    try:
        WRITERS[format](model, info, tmps[0])
        if format == "safetensors":
            description = {**info, "classes": names, "architecture": architecture(model)}
            tmps[1].write_text(json.dumps(description, indent=2) + "\n")
        for tmp, path in zip(tmps, targets, strict=True):
            os.link(tmp, path)  # fails if the file appeared meanwhile: never replaces one
            linked.append(path)
    except FileExistsError as err:
        for path in linked:  # this export's own first file, without its second: remove it
            path.unlink()
        existing = err.filename2 or target
        raise UserError(f"{existing} already exists: pass another --output (export never replaces a file)") from None
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return target


def write_pt2(model: Probabilities, info: dict[str, str], path: Path) -> None:
    # torch.export: the graph and weights in one file that torch.export.load reads without this package's code,
    # for any batch size; the class names and conventions as its extra files.
    program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path, extra_files=info)


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


def write_safetensors(model: Probabilities, info: dict[str, str], path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UserError("safetensors export needs the export extra: pip install 'lit_transfer[export]'") from None
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(path), metadata=info)  # the header carries the conventions too (str -> str)


WRITERS = {"pt2": write_pt2, "onnx": write_onnx, "safetensors": write_safetensors, "torchscript": write_torchscript}


def architecture(model: Probabilities) -> dict[str, Any]:
    """The network as the safetensors JSON describes it: for each part (``backbone``, ``head``, in order) its layers
    as ``[name, constructor]``, each constructor a ``torch.nn`` call (``Conv2d(1, 32, kernel_size=(3, 3), ...)``);
    the weights are named ``<part>.<layer>.<weight or bias>``; a softmax over dim 1 follows."""
    batch_norm = "batch_norm=True" if hasattr(model.backbone, "bn1") else ""
    return {
        "parts": {
            part: [[name, repr(torch_nn(layer))] for name, layer in getattr(model, part).named_children()]
            for part in ("backbone", "head")
        },
        "output": "softmax over dim 1 of head(backbone(images))",
        "lit_transfer": f"lit_transfer.export.Probabilities(Backbone({batch_norm}), Head({model.head.num_classes}))",
    }


def torch_nn(layer: nn.Module) -> nn.Module:
    """The ``torch.nn`` layer that ``layer`` computes in evaluation mode: the fast CPU dropout and flatten of
    ``lit_transfer/speed/layers.py`` are subclasses of torch's own, described as those."""
    for base in (nn.Dropout, nn.Flatten):
        if isinstance(layer, base) and type(layer) is not base:
            return base(layer.p) if base is nn.Dropout else base(layer.start_dim, layer.end_dim)
    return layer


def load_safetensors(path: str | os.PathLike) -> tuple[Probabilities, dict[str, Any]]:
    """The network of a ``--format safetensors`` export, in evaluation mode, and its JSON file (beside it, same
    name with ``.json``): ``info["classes"]``, ``info["input"]``, ``info["architecture"]``."""
    from safetensors.torch import load_file

    info = json.loads(Path(path).with_suffix(".json").read_text())
    weights = load_file(str(path))
    model = Probabilities(Backbone(has_batch_norm(weights)), Head(len(info["classes"])))
    model.load_state_dict(weights)
    return model.eval(), info


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
    if config.format in DEPRECATED:
        print(f"note: {DEPRECATED[config.format]}")
    if config.format == "web":
        from lit_transfer.export.web import folder_size

        print(f"wrote {path}/ ({folder_size(path) / 1e6:.1f} MB): open {path / 'index.html'} in a browser, or put the")
        print("folder on any static host (GitHub Pages, ...); it needs no server code and no network (docs/web.md)")
        return path
    print(f"wrote {path}: {OUTPUT}")
    if config.format == "safetensors":
        print(f"wrote {path.with_suffix('.json')}: the classes, the input rule and the architecture")
    print(f"load it in Python ({INPUT}):")
    print(SNIPPET[config.format].format(path=path))
    return path
