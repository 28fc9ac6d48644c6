"""The transfer study's plan: which runs (after Yosinski et al. 2014), and each one's ``lit_transfer fit`` command.

Per direction (5-9 -> 0-4 and back within a dataset; MNIST -> Fashion-MNIST and back across datasets) and seed: one
source run, shared by frozen transfer (AnB), fine-tuned transfer (AnB+), scratch and a random frozen backbone at
each label budget, and the first n layers transferred and frozen. The ``batch_norm`` preset asks what letting a
frozen backbone's BatchNorm statistics drift costs: the backbone with BatchNorm, frozen with its statistics kept
(lit_transfer's default) or drifting (Lightning's ``train_bn=True``), against scratch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALL = list(range(10))
# direction -> (source, target), each (dataset, classes); dataset None: the study's --dataset (the notebook's split)
DIRECTIONS: dict[str, tuple[tuple[str | None, list[int]], tuple[str | None, list[int]]]] = {
    "59to04": ((None, [5, 6, 7, 8, 9]), (None, [0, 1, 2, 3, 4])),
    "04to59": ((None, [0, 1, 2, 3, 4]), (None, [5, 6, 7, 8, 9])),
    # Yosinski et al.'s "distance between tasks": every class of one dataset, then every class of the other
    "mnist_to_fashion": (("mnist", ALL), ("fashion_mnist", ALL)),
    "fashion_to_mnist": (("fashion_mnist", ALL), ("mnist", ALL)),
}
WITHIN = ["59to04", "04to59"]  # the notebook's direction and its exercise: the study's default
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "kmnist": "KMNIST"}


@dataclass(frozen=True)
class Run:
    """One training run. ``depth``: frozen weight layers; ``transfer_layers``: layers copied (None = all)."""

    direction: str
    condition: str  # pretrain | transfer_frozen | transfer_finetune | scratch | random_frozen | transfer_depth
    # | transfer_frozen_bn_drift (the batch_norm preset: frozen, BatchNorm statistics following the target data)
    seed: int
    labels_per_class: int | None = None  # None = all training images
    depth: int | None = None
    transfer_layers: int | None = None
    batch_norm: bool = False  # the network with BatchNorm after each convolution (--model.batch_norm)

    @property
    def folder(self) -> Path:
        condition = f"{self.condition}{self.depth}" if self.condition == "transfer_depth" else self.condition
        labels = "all" if self.labels_per_class is None else self.labels_per_class
        return Path("runs", self.direction, condition, f"labels{labels}", f"seed{self.seed}")

    @property
    def name(self) -> str:  # as in the report: "5-9 -> 0-4", "MNIST -> Fashion-MNIST"
        (source_set, source), (target_set, target) = DIRECTIONS[self.direction]
        if source_set is not None:
            return f"{DATASET_NAMES[source_set]} -> {DATASET_NAMES[target_set]}"
        return f"{source[0]}-{source[-1]} -> {target[0]}-{target[-1]}"

    @property
    def digits(self) -> list[int]:
        source, target = DIRECTIONS[self.direction]
        return (source if self.condition == "pretrain" else target)[1]

    def dataset(self, default: str) -> str:
        """The dataset this run trains on: its side's, or the study's ``default`` within a dataset."""
        source, target = DIRECTIONS[self.direction]
        return (source if self.condition == "pretrain" else target)[0] or default


def main_budget(budgets: list[int | None], preset: str) -> int | None:
    """The label budget of the condition table, the freezing-depth runs and the confusion matrix: the largest."""
    return None if preset == "seed" or None in budgets else max(budgets)


def plan(
    preset: str,
    seeds: list[int],
    budgets: list[int | None],
    depths: list[int],
    source: int | None,
    directions: list[str],
) -> list[Run]:
    """Seed by seed (a first complete picture early), each direction's source run before the runs that use it."""
    runs = []
    for seed in seeds:
        for direction in directions:
            runs.append(Run(direction, "pretrain", seed, source))
            if preset == "seed":  # the notebook's two stages only
                runs.append(Run(direction, "transfer_frozen", seed, None, depth=2))
                continue
            if preset == "batch_norm":  # every run with BatchNorm; the source run too (it is its own)
                runs[-1] = Run(direction, "pretrain", seed, source, batch_norm=True)
                for labels in budgets:
                    runs.append(Run(direction, "transfer_frozen", seed, labels, depth=2, batch_norm=True))
                    runs.append(Run(direction, "transfer_frozen_bn_drift", seed, labels, depth=2, batch_norm=True))
                    runs.append(Run(direction, "scratch", seed, labels, batch_norm=True))
                continue
            for labels in budgets:
                runs.append(Run(direction, "transfer_frozen", seed, labels, depth=2))
                runs.append(Run(direction, "transfer_finetune", seed, labels, depth=2))
                runs.append(Run(direction, "scratch", seed, labels))
                runs.append(Run(direction, "random_frozen", seed, labels, depth=2))
            labels = main_budget(budgets, preset)
            runs += [Run(direction, "transfer_depth", seed, labels, depth=n, transfer_layers=n) for n in depths]
    return runs


def cli_args(run: Run, settings: dict[str, Any], root: Path, source_ckpt: str | None) -> list[str]:
    """The ``python -m lit_transfer fit`` command line of one run (the CLI's defaults are the notebook's)."""
    args = [
        "fit",
        f"--seed_everything={run.seed}",
        f"--data.data_dir={settings['data_dir']}",
        f"--data.dataset={run.dataset(settings['dataset'])}",
        f"--data.download={str(settings['download']).lower()}",
        f"--data.digits={json.dumps(run.digits)}",
        f"--data.seed={run.seed}",  # the seed also picks the validation split and the label-budget subset
        f"--data.batch_size={settings['batch_size']}",
        f"--trainer.max_epochs={settings['epochs']}",
        f"--trainer.default_root_dir={root / run.folder}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        # Every run in the study's one process: a DDP launcher would start its workers as `python -m
        # lit_transfer.study` (the running script), i.e. a whole study each, and "auto" takes every GPU there is.
        "--trainer.devices=1",
    ]
    if run.labels_per_class is not None:
        args.append(f"--data.train_per_class={run.labels_per_class}")
    if run.condition.startswith("transfer"):
        args.append(f"--model.init_from={source_ckpt}")
    if run.transfer_layers is not None:
        args.append(f"--model.transfer_layers={run.transfer_layers}")
    if run.depth is not None:
        args += ["--trainer.callbacks+=lit_transfer.FreezeFeatures", f"--trainer.callbacks.depth={run.depth}"]
    if run.batch_norm:
        args.append("--model.batch_norm=true")
    if run.condition == "transfer_frozen_bn_drift":  # Lightning's default: frozen BatchNorm keeps training mode
        args.append("--trainer.callbacks.train_bn=true")
    if run.condition == "transfer_finetune":
        args.append(f"--trainer.callbacks.unfreeze_at_epoch={settings['warmup_epochs']}")
    return args + list(settings["extra_args"])
