"""``python -m lit_transfer export`` in a fresh process: each format, loaded by the snippet the tool prints (without
lit_transfer where the format needs none), agrees with ``predict``. The in-process checks of each format are in
tests/test_export_formats.py (quick loop)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, only_run, run_cli
from test_export_formats import printed_snippet

from lit_transfer.export import main
from lit_transfer.images.rule import load_mnist

FORMATS = ["pt2", "onnx", "safetensors", "torchscript"]


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
