"""The transfer study's runs as rows: one per run, picking conditions out, naming them, mean ± std over seeds."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lit_transfer.errors import count

CONDITIONS = [
    "pretrain",
    "transfer_frozen",
    "transfer_frozen_bn_drift",  # the batch_norm preset
    "transfer_finetune",
    "scratch",
    "random_frozen",
    "transfer_depth",
]


def label(condition: str, depth: int | None, warmup: int) -> str:
    if condition == "transfer_depth":
        return f"first {depth} layer{'s' * (depth != 1)} transferred + frozen (n={depth})"
    unfrozen = f"after {warmup} frozen epoch{'s' * (warmup != 1)}" if warmup else "from the start"
    return {
        "pretrain": "source run (pretrain, tested on the source digits)",
        "transfer_frozen": "transfer, backbone frozen (the notebook)",
        "transfer_frozen_bn_drift": "transfer, backbone frozen, BatchNorm statistics drifting",
        "transfer_finetune": f"transfer, fine-tuned {unfrozen}",
        "scratch": "from scratch",
        "random_frozen": "random backbone, frozen (control)",
    }[condition]


def budget_text(labels: int | None) -> str:
    return "all labels" if labels is None else f"{count(labels, 'label')} per class"


def arrow(direction: str) -> str:
    return direction.replace("->", "→")


def select(rows: list[dict], direction: str, condition: str, labels: Any = "any", depth: Any = "any") -> list[dict]:
    """The rows of one direction and condition; ``labels`` and ``depth`` narrow it unless ``"any"``."""
    wanted = {"direction": direction, "condition": condition, "labels_per_class": labels, "depth": depth}
    return [r for r in rows if all(v == "any" or r[k] == v for k, v in wanted.items())]


class Stat:
    """Mean and sample standard deviation of a metric over the seeds of one condition."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)
        self.n = len(self.values)
        self.mean = statistics.fmean(self.values) if self.values else math.nan
        self.std = statistics.stdev(self.values) if self.n > 1 else None

    def pct(self) -> str:
        return f"{100 * self.mean:.2f}%"

    def cell(self) -> str:
        return f"{100 * self.mean:.2f} ± " + ("n/a" if self.std is None else f"{100 * self.std:.2f}")


def acc(rows: list[dict], *key: Any) -> Stat:
    return Stat(r["test_acc"] for r in select(rows, *key))


def row(run: Any, record: dict[str, Any], root: Path) -> dict[str, Any]:
    """One line of ``results.csv``: the study's ``Run``, its ``results.json`` numbers, and where it lives."""
    results = json.loads((root / record["run_dir"] / "results.json").read_text())
    return {
        "direction": run.name,
        "condition": run.condition,
        "seed": run.seed,
        "labels_per_class": run.labels_per_class,  # None: all
        "depth": run.depth,  # frozen weight layers (fine-tuning: until unfrozen)
        "transfer_layers": run.transfer_layers,  # None: all that fit
        "batch_norm": run.batch_norm,  # BatchNorm after each convolution
        "digits": results["digits"],
        "epochs": results["epochs"],
        "test_acc": results["test_acc"],
        "test_loss": results["test_loss"],
        "train_time_s": results["train_time_s"],
        "wall_s": record["wall_s"],  # the whole run: start, training, validation, test
        "train_images": results["train_images"],  # over all epochs
        "train_per_class": results["train_images"] / (results["epochs"] or 1) / len(results["digits"]),
        "device": results["device"],
        "run_dir": record["run_dir"],
    }
