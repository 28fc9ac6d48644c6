"""The README's and docs/' snippets run as written with the README's data layout (the real MNIST in
``../shared/data``, beside the checkout), and what the package prints counts in proper English ("1 epoch").

Commands that train for minutes are checked by what they name (every MNIST command reads ``../shared/data``);
the short Python snippets run, in a checkout-like folder whose ``../shared/data`` is the real MNIST."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REAL_MNIST, REPO

from lit_transfer.callbacks.stage_report import format_report

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A Ray cluster's shared folder, the same path on every machine (docs/study-ray.md): an example of such a path.
CLUSTER_PATH = "/shared/data"


def blocks(kind: str | None = None) -> list[tuple[Path, str, str]]:
    """Every fenced code block: (file, language, text)."""
    found = []
    for doc in DOCS:
        for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", doc.read_text(), re.S | re.M):
            if kind is None or lang == kind:
                found.append((doc, lang, body))
    return found


def commands() -> list[tuple[Path, list[str]]]:
    """Each ``python -m lit_transfer ...`` command of the bash blocks, continuation lines joined, ``$d``/``$s``
    shell variables set in the block expanded."""
    found = []
    for doc, _, body in blocks("bash"):
        text = body.replace("\\\n", " ")
        variables = dict(re.findall(r'^\s*(\w+)="([^"]*)"', text, re.M))
        for line in text.splitlines():
            line = line.split(" #")[0]
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            if re.search(r"python -m lit_transfer(\.study)? ", line):
                words = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", line))
                found.append((doc, words[words.index("python") :]))
    return found


def option(words: list[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def test_every_mnist_command_reads_the_readmes_data_layout() -> None:
    checked = 0
    for doc, words in commands():
        module, subcommand = words[2], words[3] if len(words) > 3 else ""
        if module == "lit_transfer.study":
            if "..." in words or "--help" in words:
                continue
            value = option(words, "--data_dir")
        elif subcommand in ("fit", "validate", "test", "predict"):
            config = option(words, "--config") or ""
            folder = "folder" in config or option(words, "--data.dataset") == "folder"
            if folder or option(words, "--data.predict_path"):
                continue  # an image folder or image files, which the docs make
            value = option(words, "--data.data_dir")
        else:
            continue
        checked += 1
        assert value in ("../shared/data", CLUSTER_PATH), f"{doc.name}: {' '.join(words)}"
    assert checked >= 15


def test_no_python_snippet_reads_mnist_from_elsewhere() -> None:
    for doc, _, body in blocks():
        for call in re.findall(r"\b(?:MNIST|FashionMNIST|KMNIST)\(([^)]*)\)", body):
            assert call.split(",")[0].strip() in ('"../shared/data"', "REAL_MNIST"), f"{doc.name}: MNIST({call})"


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_MNIST, reason="set LIT_TRANSFER_MNIST_ROOT to the folder that holds MNIST/raw/")
def test_own_data_snippets_run_as_written(tmp_path: Path) -> None:
    # A checkout in tmp_path/checkout with the README's ../shared/data beside it.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(Path(REAL_MNIST).resolve())
    doc = REPO / "docs" / "own-data.md"
    heredocs = [b for d, lang, b in blocks("bash") if d == doc and "python - <<'EOF'" in b]
    snippets = [b for d, lang, b in blocks("python") if d == doc]
    assert len(heredocs) == 1 and len(snippets) == 1
    script = heredocs[0].split("python - <<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]
    ast.parse(script)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for code in (script, snippets[0] + "\nassert images.shape == (1, 1, 28, 28) and images.max() <= 1\n"):
        done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    made = {split: len(list((checkout / "my_images" / split).rglob("*.jpg"))) for split in ("train", "test")}
    assert made == {"train": 500, "test": 150}


@pytest.mark.parametrize(("epochs", "expected"), [(1, "training: 1 epoch, "), (5, "training: 5 epochs, ")])
def test_counts_are_in_proper_english(epochs: int, expected: str, tmp_path: Path) -> None:
    report = {
        "stage": "pretrain", "digits": [5, 6], "dataset": "mnist", "classes": ["5", "6"], "data_dir": "d",
        "epochs": epochs, "train_time_s": 1.0, "images_per_s": 10.0, "test_loss": 0.1, "test_acc": 0.9,
        "per_class_acc": {"5": 0.9, "6": 0.9}, "total_params": 1, "trainable_params": 1, "frozen_params": 0,
        "checkpoint": None,
    }  # fmt: skip
    assert expected in format_report(report, tmp_path / "results.json")


def test_no_fstring_prints_a_count_before_a_plural_noun() -> None:
    # "{n} files" reads "1 files" when n is 1: counts go through lit_transfer.errors.count (or name a constant).
    nouns = "epochs|images|files|batches|runs|cores|labels|digits|classes|seeds|layers|more unreadable files"
    pattern = re.compile(r"\{[^{}]*\}\s(?:" + nouns + r")\b(?!/)")  # not a unit: images/s
    found = []
    for path in sorted((REPO / "lit_transfer").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("  # ")[0]
            if re.search(r"\bf[\"']", code) and pattern.search(code):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
