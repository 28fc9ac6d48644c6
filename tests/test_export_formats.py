"""``python -m lit_transfer export``, in process: torch.export, ONNX, safetensors and TorchScript files that compute the
checkpoint's probabilities, with the class names and input convention inside or beside them, loaded by the snippet
it prints; never over an existing file. (tests/test_export.py runs each format in a fresh process, against
``predict``.)"""

from __future__ import annotations

import base64
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lit_transfer import __main__ as entry
from lit_transfer.data.folders import FolderDataModule
from lit_transfer.export import main
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


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_matches_the_checkpoint(fmt: str, folder_stage: dict, tmp_path: Path, capsys) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (pip install '.[export]')")
    output = tmp_path / f"model.{fmt}"
    main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", fmt, "--output", str(output)])
    printed = capsys.readouterr().out
    # its own lines only: torch's ONNX exporter narrates each of its steps unless told not to
    before, wrote, after = printed.partition(f"wrote {output}: ")
    deprecated = "note: TorchScript is deprecated upstream: PyTorch recommends torch.export (--format pt2)\n"
    assert wrote and before == (deprecated if fmt == "torchscript" else ""), printed[:200]
    json_line = f"wrote {output.with_suffix('.json')}: the classes, the input rule and the architecture\n"
    assert (json_line in after) == (fmt == "safetensors")
    assert "load it in Python (images: float32 (N, 1, 28, 28), each pixel / 255" in after
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

        proto = onnx.load(str(output))
        props = {p.key: p.value for p in proto.metadata_props}
        # the names OUTPUT and the printed snippet give them, for tools that feed and fetch by name
        names = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
        assert names == (["images"], ["probabilities"])
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


def test_export_help_names_every_format_and_torchscripts_deprecation(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m lit_transfer export ")
    assert "a checkpoint as a file for torch.export, ONNX, safetensors or TorchScript." in text
    assert "The network maps a float32 batch" not in text  # the module docstring's first paragraph only
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


def test_export_writes_onnx_unless_told_otherwise(folder_stage: dict, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the export extra (pip install '.[export]')")
    checkpoint = tmp_path / "stage.ckpt"
    checkpoint.write_bytes(folder_stage["checkpoint"].read_bytes())
    main(["--ckpt_path", str(checkpoint)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage.ckpt", "stage.onnx"]
    assert f'onnxruntime.InferenceSession("{tmp_path / "stage.onnx"}")' in capsys.readouterr().out


def test_the_export_records_its_run_and_conventions(folder_stage: dict, tmp_path: Path) -> None:
    # Through the stage's `latest` link, the export names the run it came from (version_0), as runs do: the link
    # moves on with the next run.
    from safetensors import safe_open

    from lit_transfer.export.formats import INPUT, OUTPUT

    run = folder_stage["checkpoint"].parents[1]
    through_latest = run.parent / "latest" / "checkpoints" / "last.ckpt"
    assert through_latest.is_file() and run.name == "version_0"
    output = tmp_path / "model.safetensors"
    main(["--ckpt_path", str(through_latest), "--format", "safetensors", "--output", str(output)])
    with safe_open(str(output), "pt") as f:
        header = f.metadata()
    expected = {
        "classes": json.dumps(NAMES),
        "input": INPUT,
        "output": OUTPUT,
        "checkpoint": str(folder_stage["checkpoint"]),
        "dataset": "folder",
    }
    assert header == expected
    description = json.loads(output.with_suffix(".json").read_text())
    assert {key: description[key] for key in expected} == {**expected, "classes": NAMES}


def test_a_checkpoint_without_class_names_exports_column_numbers(folder_stage: dict, tmp_path: Path) -> None:
    checkpoint = torch.load(folder_stage["checkpoint"], weights_only=True)
    del checkpoint["lit_transfer"]["classes"]  # and its digits are empty: a marker that names no class
    torch.save(checkpoint, tmp_path / "nameless.ckpt")
    main(["--ckpt_path", str(tmp_path / "nameless.ckpt"), "--format", "safetensors"])
    assert json.loads((tmp_path / "nameless.json").read_text())["classes"] == ["0", "1", "2"]


@pytest.mark.parametrize("when", ["before", "meanwhile"])
def test_safetensors_never_replaces_the_json_beside_it(
    when: str, folder_stage: dict, tmp_path: Path, monkeypatch
) -> None:
    # The model.json there before the export, or written by another process after export checked the name and
    # before it links its own: export removes the model.safetensors it may have linked, keeps the other file, and
    # names it.
    from lit_transfer.export import formats

    def architecture_then_a_rival(model: torch.nn.Module) -> dict:
        (tmp_path / "model.json").write_text("precious")
        return real_architecture(model)

    if when == "before":
        (tmp_path / "model.json").write_text("precious")
    else:
        real_architecture = formats.architecture
        monkeypatch.setattr(formats, "architecture", architecture_then_a_rival)
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
    assert exit_info.value.code == (
        f"lit_transfer export: error: {tmp_path / 'model.json'} already exists: pass another --output "
        "(export never replaces a file)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
    assert (tmp_path / "model.json").read_text() == "precious"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "torchscript"], "does not exist"),
        (["--format", "keras"], 'Parser key "format": Expected a typing.Literal['),
    ],
)
def test_export_bad_input(args: list[str], expected: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(tmp_path / "nope.ckpt"), *args])
    message = exit_info.value.code
    assert isinstance(message, str) and message.count("\n") == 0 and expected in message
    assert message.startswith("lit_transfer export: error: ")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("fmt", "missing"), [("onnx", "onnx"), ("safetensors", "safetensors.torch")])
def test_a_format_whose_extra_is_missing_names_the_install(
    fmt: str, missing: str, folder_stage: dict, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` finds when the export extra is not installed
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", fmt, "--output", str(tmp_path / "m")])
    expected = {"onnx": "ONNX", "safetensors": "safetensors"}[fmt]
    assert exit_info.value.code == (
        f"lit_transfer export: error: {expected} export needs the export extra: pip install 'lit_transfer[export]'"
    )
    assert not list(tmp_path.iterdir())  # no file, and no temporary one left


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


def test_web_folder_beside_the_checkpoint_holds_both_stages(folder_stage: dict, tmp_path: Path, capsys) -> None:
    # The browser's side is tests/test_web.py (slow); here what the export writes: the folder and both networks.
    from lit_transfer.export import web

    if not all((web.PAGE / "node_modules" / name).is_file() for name in web.RUNTIME):
        pytest.skip(f"the page's runtime is not installed: npm ci --ignore-scripts --prefix {web.PAGE}")
    checkpoint = tmp_path / "stage.ckpt"
    checkpoint.write_bytes(folder_stage["checkpoint"].read_bytes())
    main(["--ckpt_path", str(checkpoint), "--format", "web"])
    folder = tmp_path / "stage-web"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert capsys.readouterr().out == (
        f"wrote {folder}/ ({size / 1e6:.1f} MB): open {folder / 'index.html'} in a browser, or put the\n"
        "folder on any static host (GitHub Pages, ...); it needs no server code and no network (docs/web.md)\n"
    )
    assert (folder / "index.html").is_file()
    script = (folder / "models.js").read_text()
    models = json.loads(script.split("window.LIT_TRANSFER_MODELS = ", 1)[1].rstrip().rstrip(";"))
    one, two = models["stages"]["one"], models["stages"]["two"]
    assert (one["frozen"], two["frozen"], two["classes"], two["checkpoint"]) == (False, True, NAMES, str(checkpoint))
    assert one["classes"] == ["5", "6", "7", "8", "9"] and models["features"] == "fc1"
    # every weight, float32: the notebook's 600,165 parameters, less fc2's 2 x 129 for 3 classes instead of 5
    for stage, parameters in ((one, 600_165), (two, 600_165 - 2 * 129)):
        sizes = [torch.Size(spec["shape"]).numel() for spec in stage["weightSpecs"]]
        assert len(base64.b64decode(stage["weights"])) == 4 * sum(sizes) == 4 * parameters
    with pytest.raises(SystemExit) as exit_info:  # again: never over the folder
        main(["--ckpt_path", str(checkpoint), "--format", "web"])
    assert "already exists" in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:  # --source_ckpt belongs to the web format only
        main(["--ckpt_path", str(checkpoint), "--format", "pt2", "--source_ckpt", str(checkpoint)])
    assert exit_info.value.code == "lit_transfer export: error: --source_ckpt is for --format web only: leave it out"
    # --output names the folder, --source_ckpt stage one's checkpoint (here: a copy of the one stage two names)
    source = tmp_path / "source.ckpt"
    source.write_bytes(Path(one["checkpoint"]).read_bytes())
    main(
        [
            "--ckpt_path",
            str(checkpoint),
            "--format",
            "web",
            "--output",
            str(tmp_path / "site"),
            "--source_ckpt",
            str(source),
        ]
    )
    script = (tmp_path / "site" / "models.js").read_text()
    models = json.loads(script.split("window.LIT_TRANSFER_MODELS = ", 1)[1].rstrip().rstrip(";"))
    assert models["stages"]["one"]["checkpoint"] == str(source)


# The network rebuilt from the safetensors JSON alone, with torch.nn only (its layers are torch.nn constructors), as
# docs/own-data.md tells a user without lit_transfer to do it.
def test_the_safetensors_json_rebuilds_the_network_with_torch_nn_only(folder_stage: dict, tmp_path: Path) -> None:
    from collections import OrderedDict

    from safetensors.torch import load_file

    output = tmp_path / "model.safetensors"
    main(["--ckpt_path", str(folder_stage["checkpoint"]), "--format", "safetensors", "--output", str(output)])
    info = json.loads(output.with_suffix(".json").read_text())
    assert info["architecture"]["lit_transfer"] == "lit_transfer.export.Probabilities(Backbone(), Head(3))"
    assert info["architecture"]["output"] == "softmax over dim 1 of head(backbone(images))"
    parts = {
        part: torch.nn.Sequential(OrderedDict((name, eval("torch.nn." + call)) for name, call in layers))
        for part, layers in info["architecture"]["parts"].items()
    }
    model = torch.nn.Sequential(OrderedDict(parts))
    model.load_state_dict(load_file(str(output)))
    images = some_images(folder_stage, tmp_path)
    with torch.no_grad():
        rebuilt = model.eval()(images.unsqueeze(1).float() / 255).softmax(1)
    assert torch.allclose(rebuilt, pytorch_probabilities(folder_stage["checkpoint"], images), atol=1e-6)


def test_the_exported_copy_is_frozen_and_the_module_is_not(folder_stage: dict) -> None:
    from lit_transfer.export import probabilities_model

    module = TransferModule(num_classes=3)
    exported = probabilities_model(module)
    assert not exported.training and not any(p.requires_grad for p in exported.parameters())
    assert module.training and all(p.requires_grad for p in module.parameters())


def test_export_into_a_missing_folder_says_which(folder_stage: dict, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(folder_stage["checkpoint"]), "--output", str(tmp_path / "nope" / "model.onnx")])
    assert exit_info.value.code == (
        f"lit_transfer export: error: folder {tmp_path / 'nope'} does not exist: create it or pass another --output"
    )
    assert not list(tmp_path.iterdir())
