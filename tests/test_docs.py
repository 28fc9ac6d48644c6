"""The README's and docs/' snippets run as written with the README's data layout (the real MNIST in
``../shared/data``, beside the checkout), and what the package prints counts in proper English ("1 epoch").

Commands that train for minutes are checked by what they name (every MNIST command reads ``../shared/data``); the
Quick start's two stages run as pasted (in quick mode), and the short Python snippets run, in a checkout-like folder
whose ``../shared/data`` is the real MNIST."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import process_guard
import pytest
import torch
from helpers import REAL_MNIST, REPO, write_mnist

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


def checkout_beside_data(tmp_path: Path) -> Path:
    """A folder laid out as the README's: ``tmp_path/checkout`` (what the commands need of a checkout: ``configs/``)
    with ``../shared/data`` beside it, the real MNIST where LIT_TRANSFER_MNIST_ROOT names it, else tiny IDX files in
    its layout. The README's relative paths then resolve as on a user's machine, and the runs write under tmp_path."""
    checkout, data = tmp_path / "checkout", tmp_path / "shared" / "data"
    shutil.copytree(REPO / "configs", checkout / "configs")
    if REAL_MNIST:
        data.parent.mkdir()
        data.symlink_to(Path(REAL_MNIST).resolve())
    else:
        write_mnist(data)
    return checkout


# Quick mode: trainer flags a user could add for a first look; the Quick start's commands are otherwise as written.
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
QUICK += ["--trainer.limit_test_batches", "2"]


def readme_commands(title: str, command: str) -> list[list[str]]:
    """The commands of the bash block in the README's section ``title`` that runs ``command`` (comments dropped)."""
    section = (REPO / "README.md").read_text().split(f"\n## {title}\n")[1].split("\n## ")[0]
    (block,) = [b for b in re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M) if command in b]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def quick_start_commands() -> list[list[str]]:
    """The Quick start's training block: the bash block of the README's Quick start that runs ``fit``."""
    return readme_commands("Quick start", "lit_transfer fit")


def lit_transfer(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A ``python ...`` command of the docs in a new process (this Python, this checkout's package), in quick mode."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    cmd = [sys.executable, *words[1:], *QUICK]
    done = process_guard.run(cmd, timeout=300, capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, f"{' '.join(words)}\n{done.stderr[-3000:]}"
    return done


def test_the_quick_start_runs_as_pasted_and_so_does_the_printed_next_command(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert [c[:4] for c in commands] == [["python", "-m", "lit_transfer", "fit"]] * 2
    assert not [w for c in commands for w in c if "<" in w or ">" in w], "a placeholder to fill in"
    checkout = checkout_beside_data(tmp_path)
    stage_one = lit_transfer(commands[0], checkout)
    lit_transfer(commands[1], checkout)
    runs = checkout / "runs"
    assert [os.readlink(runs / stage / "latest") for stage in ("pretrain", "finetune")] == ["version_0"] * 2
    source = torch.load(runs / "pretrain/version_0/checkpoints/last.ckpt", weights_only=True)
    target = torch.load(runs / "finetune/version_0/checkpoints/last.ckpt", weights_only=True)
    # stage two started from stage one's weights (its frozen convolutions are stage one's), and names that run
    for key in ("backbone.conv1.weight", "backbone.conv2.bias"):
        assert torch.equal(source["state_dict"][key], target["state_dict"][key]), key
    assert target["hyper_parameters"]["init_from"] == "runs/pretrain/version_0/checkpoints/last.ckpt"
    # the command stage one printed, pasted as printed
    (line,) = [ln for ln in stage_one.stdout.splitlines() if ln.startswith("next: ")]
    lit_transfer(shlex.split(line.removeprefix("next: ")), checkout)
    again = torch.load(runs / "finetune/version_1/checkpoints/last.ckpt", weights_only=True)
    assert torch.equal(source["state_dict"]["backbone.conv1.weight"], again["state_dict"]["backbone.conv1.weight"])
    assert os.readlink(runs / "finetune" / "latest") == "version_1"
    # then the README's web page, exported as written from the newest stage two
    if not (REPO / "lit_transfer/export/page/node_modules").is_dir():
        return  # tests/test_web.py says why it skips
    export, _ = readme_commands("The lesson in a browser", "lit_transfer export")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = process_guard.run([sys.executable, *export[1:]], timeout=300, capture_output=True, text=True,
                             cwd=checkout, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    page = checkout / export[export.index("--output") + 1]
    assert (page / "index.html").is_file()
    assert '"checkpoint": "runs/finetune/version_1/checkpoints/last.ckpt"' in (page / "models.js").read_text()


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
