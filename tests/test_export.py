"""``python -m lit_transfer export``: torch.export, ONNX, safetensors and TorchScript files that compute the
checkpoint's probabilities, with the class names and input convention inside or beside them, loaded by the snippet
it prints (in a fresh process, without lit_transfer where the format needs none) and agreeing with ``predict``;
never over an existing file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, only_run, run_cli

from lit_transfer import __main__ as entry
from lit_transfer.data.folders import FolderDataModule
from lit_transfer.export import main
from lit_transfer.images.rule import load_mnist
from lit_transfer.module import TransferModule

NAMES = ["bar0", "bar1", "bar2"]
FORMATS = ["pt2", "onnx", "safetensors", "torchscript"]


def some_images(folder_stage: dict, tmp_path: Path) -> torch.Tensor:
    data = FolderDataModule(data_dir=str(folder_stage["folder"]), cache_dir=str(tmp_path / "c"))
    images, _, _ = data.read("test")
    noise = torch.randint(0, 256, (7, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return torch.cat([images, noise])  # any input, not only the folder's


def pytorch_probabilities(checkpoint: Path, images: torch.Tensor) -> torch.Tensor:
    model = TransferModule(num_classes=3)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        return model.eval()(images).softmax(1)


def printed_snippet(printed: str) -> str:
    """The lines the tool printed for loading the file, from the first import to ``probabilities = ...``."""
    lines = printed.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")))
    end = next(i for i, line in enumerate(lines) if line.startswith("probabilities ="))
    return "\n".join(lines[start : end + 1])


def run_snippet(printed: str, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Run the lines the tool printed, as a user would paste them, on ``images`` (float, pixel / 255)."""
    snippet = printed_snippet(printed)
    scope = {"images": images.numpy() if "onnxruntime" in snippet else images}
    with torch.no_grad():
        exec(snippet, scope)
    return torch.as_tensor(scope["probabilities"]), scope["classes"]


def classes_in_a_fresh_process(snippet: str, images: np.ndarray, folder: Path, lit_transfer: bool = False) -> list:
    """Run ``snippet`` (which defines ``classes`` and ``probabilities`` from ``images``, float32 (N, 1, 28, 28)) in a
    new Python process, where importing lit_transfer fails unless ``lit_transfer``; each image's predicted class."""
    np.save(folder / "images.npy", images)
    script = "\n".join(
        [
            "import json, sys",
            "import numpy as np, torch",
            'sys.modules["lit_transfer"] = None  # importing lit_transfer fails' if not lit_transfer else "",
            "images = np.load(sys.argv[1])",
            "" if "onnxruntime" in snippet else "images = torch.from_numpy(images)",
            snippet,
            'assert lit_transfer or sys.modules.get("lit_transfer") is None',
            "print(json.dumps([classes[i] for i in torch.as_tensor(probabilities).argmax(1).tolist()]))",
        ]
    ).replace("lit_transfer or", f"{lit_transfer} or")
    env = {**os.environ, "PYTHONPATH": str(REPO) if lit_transfer else ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder / "images.npy")], cwd=folder, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# The network rebuilt from the safetensors JSON alone, with torch.nn only (its layers are torch.nn constructors).
PLAIN_SAFETENSORS = """import json, torch
from collections import OrderedDict
from safetensors.torch import load_file
info = json.load(open("{json}")); classes = info["classes"]
parts = {{p: torch.nn.Sequential(OrderedDict((n, eval("torch.nn." + c)) for n, c in layers))
         for p, layers in info["architecture"]["parts"].items()}}
model = torch.nn.Sequential(OrderedDict(parts)); model.load_state_dict(load_file("{path}")); model.eval()
probabilities = model(images).softmax(1)"""


@pytest.fixture(scope="module")
def predicted(folder_stage: dict, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """``predict`` on the folder stage's test split: one row per test image (file, class, predicted)."""
    runs = tmp_path_factory.mktemp("predict_for_export")
    run_cli(
        "predict",
        "--config=configs/folder_finetune.yaml",
        f"--data.data_dir={folder_stage['folder']}",
        f"--data.cache_dir={runs / 'cache'}",
        f"--ckpt_path={folder_stage['checkpoint']}",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
    )
    with open(only_run(runs / "predict") / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_agrees_with_predict_in_a_fresh_process(
    fmt: str, folder_stage: dict, predicted: list[dict[str, str]], tmp_path: Path, capsys
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (pip install '.[export]')")
    output = tmp_path / f"model.{fmt}"
    main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", fmt, "--output", str(output)])
    snippet = printed_snippet(capsys.readouterr().out)
    images = np.stack([load_mnist(row["file"]).numpy() for row in predicted])[:, None].astype("float32") / 255
    expected = [row["predicted"] for row in predicted]
    runs = {fmt: classes_in_a_fresh_process(snippet, images, tmp_path, lit_transfer=fmt == "safetensors")}
    if fmt == "safetensors":  # and without lit_transfer, from the JSON's architecture
        plain = PLAIN_SAFETENSORS.format(json=output.with_suffix(".json"), path=output)
        runs["safetensors, torch.nn only"] = classes_in_a_fresh_process(plain, images, tmp_path)
    for name, classes in runs.items():
        agree = sum(a == b for a, b in zip(classes, expected, strict=True)) / len(expected)
        assert len(expected) == 9 and agree >= 0.999, (name, classes, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_matches_the_checkpoint(fmt: str, folder_stage: dict, tmp_path: Path, capsys) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (pip install '.[export]')")
    output = tmp_path / f"model.{fmt}"
    main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", fmt, "--output", str(output)])
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed
    images = some_images(folder_stage, tmp_path)
    probabilities, classes = run_snippet(printed, images.unsqueeze(1).float() / 255)
    assert classes == NAMES
    expected = pytorch_probabilities(folder_stage["checkpoint"], images)
    assert probabilities.shape == (16, 3)
    assert torch.allclose(probabilities, expected, atol=1e-5)
    assert torch.equal(probabilities.argmax(1), expected.argmax(1))
    # The input convention travels with the file.
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    elif fmt == "pt2":
        props = {"input": ""}
        torch.export.load(output, extra_files=props)
    elif fmt == "safetensors":
        from safetensors import safe_open

        description = json.loads(output.with_suffix(".json").read_text())
        assert description["classes"] == NAMES and description["architecture"]["parts"]["head"][-1][0] == "fc2"
        with safe_open(str(output), "pt") as f:
            props = f.metadata()
        assert props["input"] == description["input"]
    else:
        props = {"input": ""}
        torch.jit.load(str(output), _extra_files=props)
        props["input"] = props["input"].decode()
    assert "(N, 1, 28, 28), each pixel / 255, a light digit on a dark background" in props["input"]


def test_export_never_replaces_a_file(folder_stage: dict, tmp_path: Path, capsys) -> None:
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"precious")
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", "torchscript", "--output", str(existing)])
    message = exit_info.value.code
    assert isinstance(message, str) and message.count("\n") == 0
    assert f"{existing} already exists: pass another --output" in message
    assert existing.read_bytes() == b"precious" and sorted(tmp_path.iterdir()) == [existing]


def test_safetensors_never_replaces_the_json_beside_it(folder_stage: dict, tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--ckpt_path",
                str(folder_stage["checkpoint"]),
                "--format",
                "safetensors",
                "--output",
                str(tmp_path / "model.safetensors"),
            ]
        )
    assert f"{tmp_path / 'model.json'} already exists: pass another --output" in exit_info.value.code
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"] and (
        tmp_path / "model.json"
    ).read_text() == "precious"


def test_export_help_names_every_format_and_torchscripts_deprecation(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{pt2,onnx,safetensors,torchscript,web}" in text
    assert "deprecated upstream, PyTorch recommends torch.export" in text


def test_export_tool_from_the_command_line(folder_stage: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    # python -m lit_transfer export ...: the default file goes beside the checkpoint, named after it.
    checkpoint = tmp_path / "stage.ckpt"
    checkpoint.write_bytes(folder_stage["checkpoint"].read_bytes())
    monkeypatch.setattr(sys, "argv", ["lit_transfer", "export", "--ckpt_path", str(checkpoint), "--format=torchscript"])
    entry.main()
    assert (tmp_path / "stage.pt").is_file()
    assert f'torch.jit.load("{tmp_path / "stage.pt"}"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "torchscript"], "does not exist"),
        (["--format", "keras"], 'Parser key "format"'),
    ],
)
def test_export_bad_input(args: list[str], expected: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(tmp_path / "nope.ckpt"), *args])
    message = exit_info.value.code
    assert isinstance(message, str) and message.count("\n") == 0 and expected in message
    assert not list(tmp_path.iterdir())


def test_a_trained_module_is_exported_from_a_copy(folder_stage: dict) -> None:
    from lit_transfer.export import probabilities_model

    module = TransferModule(num_classes=3)
    module.load_state_dict(torch.load(folder_stage["checkpoint"], weights_only=True)["state_dict"])
    module.backbone.to(memory_format=torch.channels_last)  # as a CPU run trains it (TransferModule.setup)
    exported = probabilities_model(module)
    assert module.training and all(p.requires_grad for p in module.parameters())  # the module itself is untouched
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.script
        scripted = torch.jit.script(exported)
    with torch.no_grad():
        expected = module.eval()(images).softmax(1)
    assert torch.allclose(scripted(images.unsqueeze(1).float() / 255), expected, atol=1e-6)
