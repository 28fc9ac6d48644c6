"""What ``python -m lit_transfer --help`` and ``fit --help`` show first: every command, and a command's own options.

LightningCLI's help lists only the Trainer's subcommands, and a subcommand's help is ~1,000 lines with Lightning's
Trainer first. Here the top-level help names every command (the tools and the study included), and a subcommand's
short help is built by jsonargparse from the same classes and docstrings as the real parser (so it cannot drift
from it): the data, the model, freezing, checkpoints, speed and the common Trainer flags. ``--help-all`` shows
LightningCLI's full help.

The top-level help waits for no torch: ``python -m lit_transfer --help`` imports this module before anything imports
torch (seconds, at every start), so Lightning and the classes are imported inside ``short``.
"""

from __future__ import annotations

import inspect

COMMANDS = {
    "fit": "Train a stage (stage one: --config configs/pretrain.yaml; stage two: --config configs/finetune.yaml, "
    "from runs/pretrain/latest), then test its final weights.",
    "validate": "Compute the validation loss and accuracy of a checkpoint on its own classes.",
    "test": "Compute the test loss, accuracy and per-class accuracy of a checkpoint on its own classes.",
    "predict": "Label the test images, or your own image files (--data.predict_path), with a checkpoint.",
    "export": "Write a checkpoint as one file for inference: ONNX, torch.export (pt2), safetensors or TorchScript.",
    "demo": "Serve a local page to draw a digit and watch both stages answer, or teach new symbols.",
    "--version": "Print the versions of lit_transfer, torch, torchvision, lightning and Python, and the devices.",
}
ABOUT = "lit_transfer: pretrain a small CNN on some MNIST digits, freeze its convolutional features, retrain the head."
STUDY = "python -m lit_transfer.study: run the transfer study (every condition, both directions, several seeds)."
TRAINER_FLAGS = {"max_epochs", "accelerator", "devices", "precision", "default_root_dir", "callbacks", "max_time"}


def top_level() -> str:
    lines = ["usage: python -m lit_transfer <command> [options]", "", ABOUT, "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        f"and the study: {STUDY}",
        "",
        "Each command's own options: python -m lit_transfer <command> --help, e.g. python -m lit_transfer fit --help",
        "(fit, validate, test, predict: the project's options first; --help-all for every option of Lightning's",
        "Trainer too).",
    ]
    return "\n".join(lines)


def short(subcommand: str) -> str:
    """A subcommand's options that this project adds or sets, built from the classes' signatures."""
    import lightning as L
    from jsonargparse import ArgumentParser

    from lit_transfer.callbacks.last_checkpoint import LastCheckpoint
    from lit_transfer.command_line import options
    from lit_transfer.data import DigitsDataModule
    from lit_transfer.module import TransferModule

    parser = ArgumentParser(
        prog=f"python -m lit_transfer {subcommand}",
        usage=f"python -m lit_transfer {subcommand} [--config FILE] [--ckpt_path CKPT] [options]",
        description=COMMANDS[subcommand] + f" Every option: python -m lit_transfer {subcommand} --help-all.",
        epilog=(
            f"All options, Lightning's Trainer's included (~1,000 lines): python -m lit_transfer {subcommand} "
            "--help-all. Image folders: --data FolderDataModule (its options: --data.help FolderDataModule). "
            "Lists are written as in YAML: --data.digits '[5,6,7]'."
        ),
        exit_on_error=False,
    )
    parser.add_argument("--config", help="A YAML file of these settings, e.g. configs/pretrain.yaml.")
    parser.add_argument(
        "--ckpt_path",
        help="A checkpoint: for fit, the same stage's to resume or another stage's to start from; otherwise the one "
        "to evaluate.",
    )
    if subcommand == "fit":  # train_bn, a comparison's option, is in --help-all
        options.add_freeze_arguments(parser, skip={"train_bn"})
    parser.add_class_arguments(DigitsDataModule, "data")
    parser.add_class_arguments(TransferModule, "model", skip={"num_classes"})
    if subcommand == "fit":
        options.add_speed_arguments(parser.add_argument_group("Speed (--speed.*): the same results, less work"))
        keep = {"every_n_train_steps", "monitor", "dirpath"}
        skip = set(inspect.signature(LastCheckpoint).parameters) - keep
        parser.add_class_arguments(LastCheckpoint, "last_checkpoint", skip=skip)
    skip = set(inspect.signature(L.Trainer).parameters) - TRAINER_FLAGS
    parser.add_method_arguments(L.Trainer, "__init__", "trainer", skip=skip)
    return parser.format_help()
