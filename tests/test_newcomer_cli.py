"""The command line as a newcomer meets it (issue 24): the help, parse errors in one line, and evaluations of a
checkpoint of another stage or other classes that say so, or refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, common_args, folder_args, only_run, results, run_cli
from test_errors import fails

from lit_transfer.__main__ import TOOLS
from lit_transfer.cli import TransferCLI
from lit_transfer.command_line import help

COMMANDS = ("fit", "validate", "test", "predict", "export", "demo", "lit_transfer.study")


def cli_output(*args: str) -> subprocess.CompletedProcess:
    """The real ``python -m lit_transfer``, as a newcomer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "lit_transfer", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command_in_whole_sentences() -> None:
    done = cli_output("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        (line,) = [
            line for line in done.stdout.splitlines() if line.split()[:1] == [command] or f"m {command}:" in line
        ]
        assert line.rstrip().endswith("."), line  # one whole sentence, not cut off
    assert "usage: python -m lit_transfer" in done.stdout
    # the program's own name and description, not LightningCLI's
    assert "pretrain a small CNN on some MNIST digits" in done.stdout
    assert "Lightning Trainer command line tool" not in done.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_the_help_lists_the_real_commands_without_importing_torch(args: list[str]) -> None:
    # The list is written by hand (help.COMMANDS, one sentence each): it must name LightningCLI's subcommands and
    # the tools, no more and no fewer.
    assert set(help.COMMANDS) - {"--version"} == set(TransferCLI.subcommands()) | set(TOOLS)
    command = [sys.executable, "-X", "importtime", "-m", "lit_transfer", *args]  # every import, on stderr
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"torch", "torchvision", "lightning", "jsonargparse"} & {name.split(".")[0] for name in imported}
    assert "lit_transfer.command_line.help" in imported and not heavy, heavy
    assert done.stdout == help.top_level() + "\n" and done.returncode == (0 if args else 2)
    assert "python -m lit_transfer fit --help" in done.stdout


def test_fit_help_shows_the_projects_options_first_and_the_rest_on_request() -> None:
    short = cli_output("fit", "--help").stdout.splitlines()
    assert short[0].startswith("usage: python -m lit_transfer fit")
    first_screen = "\n".join(short[:50])
    for option in ("--data.digits", "--data.batch_size", "--freeze.depth"):
        assert option in first_screen, option
    text = "\n".join(short)
    assert text.index("\n  --model.optimizer") < text.index("\n  --trainer.") and "--help-all" in first_screen
    for option in ("--freeze.unfreeze_at_epoch", "--speed.feature_cache", "--last_checkpoint.every_n_train_steps"):
        assert option in text
    assert "--help-all" in text and len(short) < 400
    full = cli_output("fit", "--help-all").stdout
    assert "--trainer.accumulate_grad_batches" in full and len(full.splitlines()) > 600


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.batchsize", "64"], "did you mean --data.batch_size?"),
        (["--trainer.max_epoch", "1"], "did you mean --trainer.max_epochs?"),  # no abbreviations
        (["--data.digits", "5,6,7"], "--data.digits '[5,6,7]'"),
        (["--trainer.max_epochs", "two"], "--trainer.max_epochs takes int"),
        # a value outside the choices (0.1.0's image-folder form among them: --data FolderDataModule now)
        (["--data.dataset", "folder"], "--data.dataset is 'folder': give one of mnist, fashion_mnist, kmnist"),
    ],
)
def test_parse_errors_are_one_line_with_the_fix(args: list[str], expected: str, mnist_root: Path, tmp_path: Path):
    done = cli_output("fit", "--config=configs/pretrain.yaml", *args)
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip().splitlines()
    assert len(output) <= 8, output
    assert any(expected in line for line in output), output
    assert not any(line.startswith("usage:") for line in output)


def test_predict_with_a_checkpoint_of_other_classes_says_so_first(folder_stage: dict, tmp_path: Path, caplog) -> None:
    source = folder_stage["checkpoint"].parents[3] / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"
    # the config's image folder need not exist: predicting on files reads no class folder
    own = folder_args(tmp_path / "my_images", tmp_path / "runs", "p", tmp_path / "cache")
    files = str(folder_stage["folder"] / "test")
    run_cli(
        "predict",
        "--config=configs/folder_finetune.yaml",
        *own,
        f"--ckpt_path={source}",
        f"--data.predict_path={files}",
    )
    ours = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lit_transfer:")]
    assert ours[0].startswith("lit_transfer: predict with the checkpoint's classes 5, 6, 7, 8, 9 (mnist)")


def test_a_class_count_mismatch_names_both_counts(folder_stage: dict, tmp_path: Path, capsys) -> None:
    own = folder_args(folder_stage["folder"], tmp_path / "runs", "t", tmp_path / "cache")
    message = fails(
        capsys,
        "test",
        "--config=configs/folder_finetune.yaml",
        *own,
        f"--ckpt_path={folder_stage['checkpoint']}",
        "--data.classes=[bar0,bar1]",
    )
    assert "has a head for 3 classes (bar0, bar1, bar2) and --data.classes gives 2 (bar0, bar1)" in message


def test_evaluating_stage_two_with_stage_ones_config(mnist_root: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pretrain"), *tiny)
    source = only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "finetune"),
        *tiny,
        f"--ckpt_path={source}",
    )
    fine = only_run(runs / "finetune")
    printed = capsys.readouterr().out
    assert "checkpoint for the next stage" in printed.split("== finetune")[0]  # stage one names the next stage
    assert "next stage" not in printed.split("== finetune")[1] and "checkpoint: " in printed.split("== finetune")[1]
    # no --trainer.default_root_dir: the evaluation goes beside the checkpoint's own runs, whatever the config says
    args = [a for a in common_args(mnist_root, runs, "x") if not a.startswith("--trainer.default_root_dir")]
    run_cli("test", "--config=configs/pretrain.yaml", *args, f"--ckpt_path={fine / 'checkpoints' / 'last.ckpt'}")
    report = results(only_run(runs / "finetune" / "test"))
    assert report["stage"] == "finetune" and report["digits"] == [0, 1, 2, 3, 4]
    assert "== finetune on digits 01234" in capsys.readouterr().out
