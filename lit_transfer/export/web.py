"""``export --format web``: stage one and stage two as one static page that runs in any browser, offline.

The folder holds ``index.html``, the page's own script and style (``page/`` here), TensorFlow.js (its core, CPU
backend and layers API, copied from ``page/node_modules``, which ``npm ci`` installs from ``page/package-lock.json``)
and ``models.js``: both networks as Keras models (the notebook's own framework, which TensorFlow.js' layers API
reads), their weights inline so that the page also opens as a file, without a server. Nothing is fetched from
anywhere else.

TensorFlow.js rather than onnxruntime-web: the page learns nothing by gradient (onnxruntime-web's training API was
removed after 1.19.2), and onnxruntime-web's WebAssembly file alone is 14.8 MB (1.31.1), where TensorFlow.js' three
files are 0.85 MB: the whole folder stays far under 15 MB.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_transfer.checkpoint import class_names, load_checkpoint, load_network, require_ours
from lit_transfer.errors import UserError
from lit_transfer.model import Backbone, Head

PAGE = Path(__file__).with_name("page")
PAGE_FILES = ("index.html", "page.css", "page.js", "rule.js")
# TensorFlow.js' UMD builds, loaded by <script> tags in this order (each adds to the global ``tf``)
RUNTIME = (
    "@tensorflow/tfjs-core/dist/tf-core.min.js",
    "@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.min.js",
    "@tensorflow/tfjs-layers/dist/tf-layers.min.js",
)
FEATURES = "fc1"  # the layer whose output the Teach part learns on: stage one's network up to its last layer


def keras_model(backbone: Backbone, head: Head, name: str) -> tuple[dict[str, Any], list[tuple[str, Tensor]]]:
    """The network as a Keras ``Sequential`` (its JSON config) and its weights in Keras' layout, layer for layer
    ``model.py``'s order, in evaluation mode (dropout layers pass their input through).

    Keras keeps images channels-last (N, 28, 28, 1): conv kernels are (3, 3, in, out), and ``Flatten`` reads
    (row, column, channel), so fc1's input columns are reordered from PyTorch's (channel, row, column)."""
    layers: list[dict[str, Any]] = []
    weights: list[tuple[str, Tensor]] = []

    def add(kind: str, layer_name: str, **config: Any) -> None:
        layers.append({"class_name": kind, "config": {"name": layer_name, "trainable": False, **config}})

    def conv(layer_name: str, layer: torch.nn.Conv2d, **config: Any) -> None:
        add("Conv2D", layer_name, filters=layer.out_channels, kernel_size=list(layer.kernel_size), strides=[1, 1],
            padding="valid", data_format="channels_last", dilation_rate=[1, 1], use_bias=True, **config)  # fmt: skip
        weights.extend([(f"{layer_name}/kernel", layer.weight.permute(2, 3, 1, 0)), (f"{layer_name}/bias", layer.bias)])

    def batch_norm(layer_name: str, layer: torch.nn.BatchNorm2d) -> None:
        add("BatchNormalization", layer_name, axis=-1, epsilon=layer.eps, center=True, scale=True)
        for keras_name, tensor in (("gamma", layer.weight), ("beta", layer.bias)):
            weights.append((f"{layer_name}/{keras_name}", tensor))
        for keras_name, tensor in (("moving_mean", layer.running_mean), ("moving_variance", layer.running_var)):
            weights.append((f"{layer_name}/{keras_name}", tensor))

    bn = hasattr(backbone, "bn1")
    conv("conv1", backbone.conv1, batch_input_shape=[None, 28, 28, 1], activation="linear" if bn else "relu")
    if bn:
        batch_norm("bn1", backbone.bn1)
        add("Activation", "relu1", activation="relu")
    conv("conv2", backbone.conv2, activation="linear")
    if bn:
        batch_norm("bn2", backbone.bn2)
    add("MaxPooling2D", "pool", pool_size=[2, 2], strides=[2, 2], padding="valid", data_format="channels_last")
    add("Activation", "relu2", activation="relu")
    add("Flatten", "flatten", data_format="channels_last")
    add("Dropout", "dropout", rate=backbone.dropout.p)
    fc1, fc2 = head.fc1, head.fc2
    channels, side = backbone.conv2.out_channels, 12
    kernel = fc1.weight.view(fc1.out_features, channels, side, side).permute(2, 3, 1, 0).reshape(-1, fc1.out_features)
    add("Dense", "fc1", units=fc1.out_features, activation="relu", use_bias=True)
    weights.extend([("fc1/kernel", kernel), ("fc1/bias", fc1.bias)])
    add("Dropout", "head_dropout", rate=head.dropout.p)
    add("Dense", "fc2", units=fc2.out_features, activation="softmax", use_bias=True)
    weights.extend([("fc2/kernel", fc2.weight.t()), ("fc2/bias", fc2.bias)])
    topology = {"class_name": "Sequential", "config": {"name": name, "layers": layers}, "backend": "tensorflow"}
    return topology, weights


def stage_entry(path: Path, name: str) -> dict[str, Any]:
    """What the page knows of one checkpoint: its classes, where it came from, and the network (Keras JSON and
    weights, float32 little-endian, base64)."""
    backbone, head, meta = load_network(path)
    topology, weights = keras_model(backbone, head, name)
    data = b"".join(w.detach().contiguous().to(torch.float32).numpy().astype("<f4").tobytes() for _, w in weights)
    return {
        "checkpoint": str(path),
        "dataset": str(meta.get("dataset")),
        "classes": class_names(meta) or [str(i) for i in range(head.num_classes)],
        "frozen": bool(meta.get("frozen_stage")),
        "topology": topology,
        "weightSpecs": [{"name": n, "shape": list(w.shape), "dtype": "float32"} for n, w in weights],
        "weights": base64.b64encode(data).decode("ascii"),
    }


def stage_one_of(ckpt_path: Path) -> Path:
    """The checkpoint stage two was trained from (its ``init_from``), which must still exist."""
    checkpoint = load_checkpoint(ckpt_path)
    meta = require_ours(checkpoint, ckpt_path)
    if not meta.get("frozen_stage"):
        raise UserError(
            f"{ckpt_path} is a stage-one checkpoint (nothing frozen): pass stage two's checkpoint as --ckpt_path "
            "(the page shows both stages)"
        )
    init_from = (checkpoint.get("hyper_parameters") or {}).get("init_from")
    if not init_from or not Path(init_from).is_file():
        raise UserError(
            f"the checkpoint stage two started from ({init_from or 'not recorded'}) is not there: pass it as "
            "--source_ckpt"
        )
    return Path(init_from)


def runtime_files() -> list[Path]:
    """TensorFlow.js' files as ``npm ci`` installed them beside the page; a one-line error says how otherwise."""
    files = [PAGE / "node_modules" / name for name in RUNTIME]
    if missing := [f for f in files if not f.is_file()]:
        raise UserError(
            f"the page's runtime is not installed ({missing[0].name} missing): run "
            f"`npm ci --ignore-scripts --prefix {PAGE}` (TensorFlow.js, pinned by its package-lock.json)"
        )
    return files


def write_web(ckpt_path: str | os.PathLike, source_ckpt: str | os.PathLike | None, target: Path) -> Path:
    """Write the page's folder at ``target`` (which must not exist): built in a hidden folder beside it, then
    renamed, so an interrupted export leaves no half page."""
    if target.exists():
        raise UserError(f"{target} already exists: pass another --output (export never replaces a folder)")
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist: create it or pass another --output")
    stage_two = Path(ckpt_path)
    stage_one = Path(source_ckpt) if source_ckpt else stage_one_of(stage_two)
    runtime = runtime_files()
    models = {"one": stage_entry(stage_one, "stage_one"), "two": stage_entry(stage_two, "stage_two")}
    if models["one"]["frozen"] or not models["two"]["frozen"]:
        raise UserError(
            f"{stage_one} must be a stage-one checkpoint and {stage_two} a stage-two one (frozen features): "
            "pass stage two as --ckpt_path and stage one as --source_ckpt"
        )
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        (tmp / "runtime").mkdir(parents=True)
        for name in PAGE_FILES:
            shutil.copyfile(PAGE / name, tmp / name)
        for file in runtime:
            shutil.copyfile(file, tmp / "runtime" / file.name)
        script = {"features": FEATURES, "stages": models}
        (tmp / "models.js").write_text(
            "// Written by python -m lit_transfer export --format web: both stages' networks (Keras JSON and\n"
            "// float32 weights, base64), read by page.js with TensorFlow.js' layers API.\n"
            f"window.LIT_TRANSFER_MODELS = {json.dumps(script)};\n"
        )
        os.rename(tmp, target)  # an existing empty folder would be replaced; a non-empty one fails
    except OSError as err:
        raise UserError(f"could not write {target} ({err.strerror}): pass another --output") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
