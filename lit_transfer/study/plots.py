"""The transfer study's four PNG plots, each returning (title, file name or None, why not drawn).

matplotlib's object API (``Figure`` renders with Agg on ``savefig``): no pyplot state, no display.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from lit_transfer.errors import count
from lit_transfer.study.stats import Stat, acc, arrow, budget_text, label, select

# accuracy vs labels
BUDGET_CURVES = ["transfer_frozen", "transfer_frozen_bn_drift", "transfer_finetune", "scratch", "random_frozen"]
STYLES = {  # the same in every plot; fine-tuning hollow and dashed, so frozen transfer shows when they coincide
    "transfer_frozen": {"color": "tab:blue", "marker": "o", "markersize": 9},
    "transfer_finetune": {"color": "tab:green", "marker": "s", "ls": "--", "markerfacecolor": "none", "mew": 1.5},
    "transfer_frozen_bn_drift": {"color": "tab:red", "marker": "D", "ls": "-."},
    "scratch": {"color": "tab:orange", "marker": "^"},
    "random_frozen": {"color": "tab:gray", "marker": "v", "ls": ":"},
}
DEPTH_COLOURS = ["tab:purple", "tab:brown", "tab:pink"]  # n = 1, 2, 3


def look(condition: str, depth: int | None) -> dict[str, Any]:
    return STYLES.get(condition, {"color": DEPTH_COLOURS[(depth or 1) - 1], "marker": "D", "ls": "-."})


def draw(root: Path, rows: list[dict], budget: int | None, warmup: int) -> list[tuple[str, str | None, str]]:
    return [
        plot_budgets(root, rows, warmup),
        plot_epochs(root, rows, budget, warmup),
        plot_depth(root, rows, budget),
        plot_confusion(root, rows, budget),
    ]


def save(fig: Figure, root: Path, name: str, legend_columns: int = 0) -> str:
    """Save as PNG; with ``legend_columns``, one legend for all panels below them (it would hide points inside)."""
    if legend_columns:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=legend_columns, fontsize=9)
    fig.savefig(root / name, dpi=110)
    return name


def panels(directions: list[str], height: float = 4.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.8 * len(directions), height), layout="constrained")
    return fig, [fig.add_subplot(1, len(directions), i + 1) for i in range(len(directions))]


def plot_budgets(root: Path, rows: list[dict], warmup: int) -> tuple[str, str | None, str]:
    title = "Test accuracy vs labels per class"
    budgets = {r["labels_per_class"] for r in rows if r["condition"] == "scratch"}
    if len(budgets) < 2:
        return title, None, "needs at least two label budgets"
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    fig, axes = panels(directions)
    for ax, d in zip(axes, directions, strict=True):
        ticks = {}
        for k, c in enumerate(BUDGET_CURVES):
            points = sorted({r["labels_per_class"] or math.inf for r in select(rows, d, c)})
            groups = [select(rows, d, c, None if b == math.inf else b) for b in points]
            if not groups:  # a condition this preset does not run: no empty legend entry
                continue
            x = [Stat(r["train_per_class"] for r in g).mean for g in groups]  # what the budget really gave
            y = [Stat(r["test_acc"] for r in g) for g in groups]
            dodged = [n * 1.04 ** (k - 2) for n in x]  # side by side, so coinciding error bars stay readable
            ax.errorbar(dodged, [100 * s.mean for s in y], yerr=[100 * (s.std or 0) for s in y], capsize=3,
                        label=label(c, 2, warmup), **look(c, 2))  # fmt: skip
            for b, n in zip(points, x, strict=True):
                ticks[n] = f"all\n(~{n:,.0f})" if b == math.inf else str(b) if round(n) == b else f"{b}\n(~{n:.0f})"
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training images per target class (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{arrow(d)}: test accuracy (mean ± std over seeds)")
        ax.set_ylim(top=min(ax.get_ylim()[1], 102))  # a std bar above 100% is an artefact of mean ± std
        ax.grid(alpha=0.3)
    return title, save(fig, root, "accuracy_vs_labels.png", legend_columns=2), ""


def val_curve(root: Path, run_dir: str) -> dict[int, float]:
    """Validation accuracy per epoch (1-based) from the run's ``results.json`` (complete across resumes), or from
    its ``metrics.csv`` for runs of older versions."""
    results = json.loads((root / run_dir / "results.json").read_text())
    if "val_acc_per_epoch" in results:
        return {int(epoch) + 1: acc for epoch, acc in results["val_acc_per_epoch"].items()}
    with open(root / run_dir / "metrics.csv") as f:
        return {int(r["epoch"]) + 1: float(r["val_acc"]) for r in csv.DictReader(f) if r.get("val_acc")}


def plot_epochs(root: Path, rows: list[dict], budget: int | None, warmup: int) -> tuple[str, str | None, str]:
    title = f"Validation accuracy vs epoch ({budget_text(budget)})"
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    groups = dict.fromkeys((r["condition"], r["depth"]) for r in rows if r["condition"] != "pretrain")
    fig, axes = panels(directions)
    for ax, d in zip(axes, directions, strict=True):
        last_epoch = 1
        for c, depth in groups:
            curves = [val_curve(root, r["run_dir"]) for r in select(rows, d, c, budget, depth)]
            # An epoch's mean over the seeds that have it: a run resumed from a checkpoint of an epoch's last step
            # has no validation of that epoch (Lightning skips it on resume).
            epochs = sorted(set().union(*curves))
            if not epochs:
                continue
            last_epoch = max(last_epoch, epochs[-1])
            mean = [100 * Stat(curve[e] for curve in curves if e in curve).mean for e in epochs]
            ax.plot(epochs, mean, label=label(c, depth, warmup), **look(c, depth))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_xticks(range(1, last_epoch + 1))
        ax.set_title(f"{arrow(d)}: target digits' validation split (mean over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
    return title, save(fig, root, "accuracy_vs_epoch.png", legend_columns=2), ""


def plot_depth(root: Path, rows: list[dict], budget: int | None) -> tuple[str, str | None, str]:
    title = "Test accuracy vs layers transferred and frozen"
    if not any(r["condition"] == "transfer_depth" for r in rows):
        return title, None, "this preset has no freezing-depth runs"
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, d in enumerate(dict.fromkeys(r["direction"] for r in rows)):
        depths = sorted({r["depth"] for r in select(rows, d, "transfer_depth")})
        stats = [acc(rows, d, "transfer_depth", budget, n) for n in depths]
        ax.errorbar(depths, [100 * s.mean for s in stats], yerr=[100 * (s.std or 0) for s in stats], marker="o",
                    capsize=3, color=f"C{i}", label=f"{arrow(d)}: transferred + frozen")  # fmt: skip
        ax.axhline(100 * acc(rows, d, "scratch", budget).mean, color=f"C{i}", ls="--", label=f"{arrow(d)}: scratch")
        ax.set_xticks(depths, [["conv1", "conv1-2", "conv1-2 + fc1"][n - 1] + f"\n(n={n})" for n in depths])
    ax.set_xlabel("weight layers copied from the source and frozen")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Freezing depth ({budget_text(budget)}, mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return title, save(fig, root, "accuracy_vs_depth.png"), ""


def plot_confusion(root: Path, rows: list[dict], budget: int | None) -> tuple[str, str | None, str]:
    title = f"Confusion matrix of the frozen-backbone transfer ({budget_text(budget)})"
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    fig, axes = panels(directions, height=4.8)
    for ax, d in zip(axes, directions, strict=True):
        group = select(rows, d, "transfer_frozen", budget)
        results = [json.loads((root / r["run_dir"] / "results.json").read_text()) for r in group]
        digits = results[0]["digits"]
        total = torch.tensor([r["confusion"] for r in results]).sum(0)  # summed over seeds: counts
        ax.imshow(total.numpy(), cmap="Blues")
        for (i, j), n in zip(itertools.product(range(len(digits)), repeat=2), total.flatten(), strict=True):
            ax.text(j, i, int(n), ha="center", va="center", fontsize=8,
                    color="white" if n > total.max() / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(digits)), digits)
        ax.set_yticks(range(len(digits)), digits)
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        seeds = f"{count(len(group), 'seed')} summed" if len(group) > 1 else "1 seed"
        ax.set_title(f"{arrow(d)}: {acc(rows, d, 'transfer_frozen', budget).pct()} ({seeds})")
    return title, save(fig, root, "confusion.png"), ""
