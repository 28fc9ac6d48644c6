"""The study's time left (a cost model fitted to measured runs) and its one-line progress display."""

from __future__ import annotations

import dataclasses
import sys
from typing import TextIO

from lit_transfer.study.plan import Run

FULL_IMAGES_PER_CLASS = 5400  # ~90% of MNIST's ~6,000 training images per digit: only for the first time estimate
# The time estimate's cost model, in image-epochs, from the full study's runs on the 2-core CPU (2026-11-27): a run's
# fixed cost (start, validation, test) ~4 s; an epoch with the backbone frozen (features cached) ~0.2 of a full one
# (29 s vs 88 s for 5 epochs), with only conv1 frozen ~0.85 (75 s). Fitted ratios, not promises: an estimate only.
EVAL_IMAGES = 6000
FROZEN_EPOCH = 0.2
CONV1_FROZEN_EPOCH = 0.85


def estimate_s(run: Run, walls: dict[Run, float], epochs: int, warmup: int) -> float | None:
    """Seconds for ``run``: the same run at another seed if measured, else a rate per image from finished runs."""
    same = [w for r, w in walls.items() if r == dataclasses.replace(run, seed=r.seed)]
    if same:
        return sum(same) / len(same)

    if not walls:
        return None

    def cost(r: Run) -> float:  # image-epochs, each weighted by what trains in it
        depth_cached = r.condition == "transfer_depth" and r.depth != 1  # n >= 2: the whole backbone is frozen
        if r.condition in ("transfer_frozen", "random_frozen") or depth_cached:
            weight = FROZEN_EPOCH * epochs
        elif r.condition == "transfer_finetune":  # frozen warm-up, then the whole network
            weight = FROZEN_EPOCH * warmup + (epochs - warmup)
        elif r.condition == "transfer_depth":  # n = 1: conv1 frozen, conv2 still trains
            weight = CONV1_FROZEN_EPOCH * epochs
        else:
            weight = epochs
        return EVAL_IMAGES + 5 * (r.labels_per_class or FULL_IMAGES_PER_CLASS) * weight

    return cost(run) * sum(walls.values()) / sum(cost(r) for r in walls)


def time_left(todo: list[Run], walls: dict[Run, float], settings: dict, at_a_time: int = 1) -> float | None:
    """Seconds until ``todo`` is done, ``at_a_time`` runs side by side (their walls measured side by side too)."""
    estimates = [estimate_s(r, walls, settings["epochs"], settings["warmup_epochs"]) for r in todo]
    return None if None in estimates else sum(estimates) / at_a_time


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimated after the first run"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min" if hours else f"about {minutes} min {secs:02d} s"


class ProgressLine:
    """One line for the whole study, rewritten in place on a terminal (one line per change in a log file); notes,
    such as a failed run, are printed above it and stay."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.text = ""

    def show(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        self.stream.write(f"\r{text}\x1b[K" if self.tty else text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(f"\r{text}\x1b[K\n{self.text}" if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.text:
            self.stream.write("\n")
            self.stream.flush()
