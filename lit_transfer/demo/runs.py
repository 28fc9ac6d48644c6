"""Runs on disk: the checkpoints the demo shows by default, and what each run logged beside its checkpoint.

A run folder as ``python -m lit_transfer fit`` writes it::

    runs/<stage>/version_<n>/
        checkpoints/last.ckpt   the weights (lit_transfer.checkpoint.MARKER says which stage)
        metrics.csv             Lightning's CSVLogger: train/val loss and accuracy by epoch
        results.json            StageReport: time, test accuracy, confusion matrix, parameter counts
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_transfer.checkpoint import load_checkpoint, require_ours
from lit_transfer.errors import UserError

CURVES = ("train_loss", "val_loss", "train_acc", "val_acc")


@dataclass(frozen=True)
class Found:
    """A checkpoint of ours under the runs folder."""

    path: Path
    frozen_stage: bool
    init_from: str | None  # the checkpoint a stage-two run started from (its hyperparameter), if any


def find_checkpoints(root: str | Path) -> list[Found]:
    """Every ``last.ckpt`` of ours under ``root``, newest first; files that are not ours are passed over."""
    paths = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    found = []
    for path in paths:
        try:
            checkpoint = load_checkpoint(path)
            meta = require_ours(checkpoint, path)
        except UserError:
            continue
        init_from = (checkpoint.get("hyper_parameters") or {}).get("init_from")
        found.append(Found(path, bool(meta.get("frozen_stage")), init_from))
    return found


def pick_pair(root: str | Path, source: str | None = None, target: str | None = None) -> tuple[Path, Path]:
    """The checkpoints to show: those given, else stage two = the newest frozen-stage run (one trained from
    ``source`` when that is given) and stage one = the checkpoint stage two was trained from (where it still
    exists), else the newest stage-one run."""
    found: list[Found] | None = None

    def everything() -> list[Found]:  # read only when a default is needed
        nonlocal found
        found = find_checkpoints(root) if found is None else found
        return found

    if target is None:
        stage_two = [f for f in everything() if f.frozen_stage]
        wanted = Path(source).resolve() if source else None
        from_source = [f for f in stage_two if f.init_from and Path(f.init_from).resolve() == wanted]
        if not stage_two:
            raise UserError(
                f"no stage-two checkpoint (a last.ckpt from a run with frozen layers) under {root}/: train stage two "
                "(python -m lit_transfer fit --config configs/finetune.yaml, after stage one) "
                "or pass --target"
            )
        target_path = (from_source or stage_two)[0].path
    else:
        target_path = Path(target)
    if source is not None:
        return Path(source), target_path
    checkpoint = load_checkpoint(target_path)  # the checkpoint stage two started from (its hyperparameter)
    require_ours(checkpoint, target_path)
    init_from = (checkpoint.get("hyper_parameters") or {}).get("init_from")
    if init_from and Path(init_from).is_file():
        return Path(init_from), target_path
    stage_one = [f for f in everything() if not f.frozen_stage]
    if not stage_one:
        raise UserError(
            f"no stage-one checkpoint (a last.ckpt from a run without frozen layers) under {root}/: train stage "
            "one (python -m lit_transfer fit --config configs/pretrain.yaml) or pass --source"
        )
    return stage_one[0].path, target_path


def run_dir(checkpoint: str | Path) -> Path | None:
    """The run folder of a checkpoint in ``<run>/checkpoints/``; None for a checkpoint kept elsewhere."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric in ``CURVES``: (epoch from 1, value) pairs from the run's ``metrics.csv`` (empty when absent).

    CSVLogger writes one row per logging call: training and validation metrics of one epoch sit in different rows,
    each with its ``epoch``. A resumed epoch logged twice keeps its last value.
    """
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    curves: dict[str, dict[int, float]] = {name: {} for name in CURVES}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for name in CURVES:
                value = row.get(name)
                if value not in (None, "") and math.isfinite(float(value)):
                    curves[name][int(float(epoch)) + 1] = float(value)
    return {name: sorted(points.items()) for name, points in curves.items() if points}


def read_results(run: Path) -> dict[str, Any] | None:
    """The run's ``results.json`` (written by StageReport after the stage's test), or None."""
    path = run / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
