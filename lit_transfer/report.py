"""The transfer study's report: ``results.csv``, ``report.md`` (table, answer from the numbers) and PNG plots.

Plots use matplotlib's object API (``Figure`` renders with Agg on ``savefig``): no pyplot state, no display.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import math
import os
import platform
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

CONDITIONS = ["pretrain", "transfer_frozen", "transfer_finetune", "scratch", "random_frozen", "transfer_depth"]
BUDGET_CURVES = ["transfer_frozen", "transfer_finetune", "scratch", "random_frozen"]  # accuracy vs labels
STYLES = {  # the same in every plot; fine-tuning hollow and dashed, so frozen transfer shows when they coincide
    "transfer_frozen": {"color": "tab:blue", "marker": "o", "markersize": 9},
    "transfer_finetune": {"color": "tab:green", "marker": "s", "ls": "--", "markerfacecolor": "none", "mew": 1.5},
    "scratch": {"color": "tab:orange", "marker": "^"},
    "random_frozen": {"color": "tab:gray", "marker": "v", "ls": ":"},
}
DEPTH_COLOURS = ["tab:purple", "tab:brown", "tab:pink"]  # n = 1, 2, 3
SMOKE_STEPS = 100  # fewer optimizer steps than this in every target run: the report says it is a smoke test


def look(condition: str, depth: int | None) -> dict[str, Any]:
    return STYLES.get(condition, {"color": DEPTH_COLOURS[(depth or 1) - 1], "marker": "D", "ls": "-."})


def label(condition: str, depth: int | None, warmup: int) -> str:
    if condition == "transfer_depth":
        return f"first {depth} layer{'s' * (depth != 1)} transferred + frozen (n={depth})"
    unfrozen = f"after {warmup} frozen epoch{'s' * (warmup != 1)}" if warmup else "from the start"
    return {
        "pretrain": "source run (pretrain, tested on the source digits)",
        "transfer_frozen": "transfer, backbone frozen (the notebook)",
        "transfer_finetune": f"transfer, fine-tuned {unfrozen}",
        "scratch": "from scratch",
        "random_frozen": "random backbone, frozen (control)",
    }[condition]


def budget_text(labels: int | None) -> str:
    return "all labels" if labels is None else f"{labels} labels per digit"


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


def real_gap(a: Stat, b: Stat) -> bool | None:
    """Whether ``a - b`` exceeds twice its standard error (about 95%); ``None`` with a single seed."""
    if a.std is None or b.std is None:
        return None
    return abs(a.mean - b.mean) > 2 * math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def versus(a: Stat, b: Stat, against: str = "") -> str:
    """``a - b`` in percentage points, and whether the seed-to-seed spread could explain it."""
    spread = {None: "", True: ", beyond the seed-to-seed spread", False: ", within the seed-to-seed spread"}
    return f"{100 * (a.mean - b.mean):+.2f} points{' ' * bool(against)}{against}{spread[real_gap(a, b)]}"


def answer(rows: list[dict], budget: int | None) -> str:
    """Two or three sentences answering the notebook's question, every number taken from ``rows``."""
    first, *others = list(dict.fromkeys(r["direction"] for r in rows))
    source, target = first.split(" -> ")
    frozen = acc(rows, first, "transfer_frozen", budget)
    seeds = "one seed, so no spread to test the gaps against" if frozen.n == 1 else f"mean of {frozen.n} seeds"
    reverse = "".join(
        f"; in the reverse direction ({arrow(d)}) frozen transfer gives {acc(rows, d, 'transfer_frozen', budget).pct()}"
        + (f" against {acc(rows, d, 'scratch', budget).pct()} from scratch" if select(rows, d, "scratch") else "")
        for d in others
    )
    if not select(rows, first, "scratch"):  # the seed preset: the notebook's stages only
        return (
            f"Frozen features learned on digits {source} give {frozen.pct()} test accuracy on {target} "
            f"({budget_text(budget)}, {seeds}){reverse}. This preset has no scratch or random-feature control: "
            "run the full study to tell how much of that the transferred features contribute."
        )
    scratch, rand = acc(rows, first, "scratch", budget), acc(rows, first, "random_frozen", budget)
    beats_random = frozen.mean > rand.mean and real_gap(frozen, rand) is not False
    beats_scratch = frozen.mean > scratch.mean and real_gap(frozen, scratch) is not False
    verdict = "help" if beats_random and beats_scratch else "do not measurably help"
    if beats_random and not beats_scratch:
        verdict = "beat random features but not training from scratch"
    sentences = [
        f"Features learned on digits {source} {verdict} on {target}: with {budget_text(budget)} the notebook's "
        f"frozen-backbone transfer reaches {frozen.pct()} test accuracy ({seeds}), against {scratch.pct()} for the "
        f"same network trained from scratch ({versus(frozen, scratch)}) and {rand.pct()} for a random frozen "
        f"backbone ({versus(frozen, rand)})."
    ]
    small = min((r["labels_per_class"] for r in rows if r["labels_per_class"] is not None), default=None)
    if small is not None and small != budget:
        f_small, s_small = acc(rows, first, "transfer_frozen", small), acc(rows, first, "scratch", small)
        wider = f_small.mean - s_small.mean > frozen.mean - scratch.mean
        sentences.append(
            f"With only {small} labels per digit transfer reaches {f_small.pct()} against {s_small.pct()} from "
            f"scratch ({versus(f_small, s_small)}): the gap to scratch "
            + ("widens when labels are scarce." if wider else "does not widen when labels are scarce.")
        )
    tune = acc(rows, first, "transfer_finetune", budget)
    sentences.append(
        f"Fine-tuning the transferred backbone gives {tune.pct()} ({versus(tune, frozen, 'against keeping it frozen')})"
        f"{reverse}."
    )
    return " ".join(sentences)


def steps(row: dict, batch_size: int) -> int:
    """Optimizer steps of one run: epochs x batches per epoch."""
    epochs = row["epochs"] or 1
    return epochs * math.ceil(row["train_images"] / epochs / batch_size)


def caution(rows: list[dict], batch_size: int) -> list[str]:
    """A warning when the target runs trained for so few steps that their numbers are a smoke test only."""
    most = max(steps(r, batch_size) for r in rows if r["condition"] != "pretrain")
    if most >= SMOKE_STEPS:
        return []
    return [f"*Caution: no target run took more than {most} optimizer steps, so these numbers only show that the "
            "study runs end to end; they do not answer the question. Run the full study for that.*", ""]  # fmt: skip


# --- files -----------------------------------------------------------------------------------------------
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


def write_csv(root: Path, rows: list[dict]) -> None:
    """``results.csv``, one row per run, written atomically; a label budget of ``None`` is written ``all``."""
    tmp = root / ".results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["direction"])
        writer.writeheader()
        for r in rows:
            labels = "all" if r["labels_per_class"] is None else r["labels_per_class"]
            writer.writerow({**r, "labels_per_class": labels, "digits": " ".join(map(str, r["digits"]))})
    os.replace(tmp, root / "results.csv")


def write_report(root: Path, rows: list[dict], settings: dict[str, Any], budget: int | None) -> None:
    warmup = settings["warmup_epochs"]
    plots = [plot_budgets(root, rows, warmup), plot_epochs(root, rows, budget, warmup)]
    plots += [plot_depth(root, rows, budget), plot_confusion(root, rows, budget)]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# Transfer study: how well do features learned on one set of digits classify the other?",
        "",
        f"{len(rows)} runs of the notebook's CNN through `python -m lit_transfer fit`: {settings['dataset']}, "
        f"{settings['epochs']} epoch(s) per run, batch {settings['batch_size']}, seeds {seeds}, source runs on "
        f"{budget_text(settings['source_per_class'])}. "
        f"Device {', '.join(sorted({r['device'] for r in rows}))} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores), torch {torch.__version__}, lightning {lightning.__version__}, "
        f"{datetime.date.today()}. Total training time {sum(r['train_time_s'] for r in rows) / 60:.1f} min.",
        "",
        "## Answer",
        "",
        answer(rows, budget),
        "",
        *caution(rows, settings["batch_size"]),
        "## Test accuracy per condition",
        "",
        "Mean ± sample standard deviation over seeds (n/a with one seed), on the target digits' test images; "
        "the source run is tested on its own digits. Optimizer steps: epochs x batches per epoch (few steps, few "
        "updates: read small-budget rows with that in mind). Training time is Lightning's `Timer` (fit only). "
        "The notebook's transfer also copies the source's dense head (its outputs fit); the n-layer runs copy only "
        "the first n weight layers and start the rest afresh (Yosinski et al.'s AnB).",
        "",
        "| direction | condition | labels per digit | optimizer steps | test accuracy % | seeds | training time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in directions:
        for c in CONDITIONS:
            groups = dict.fromkeys((r["labels_per_class"], r["depth"]) for r in select(rows, d, c))
            for labels, depth in sorted(groups, key=lambda g: (g[0] is None, g[0] or 0, g[1] or 0)):
                group = select(rows, d, c, labels, depth)
                time_s, n_steps = Stat(r["train_time_s"] for r in group).mean, steps(group[0], settings["batch_size"])
                lines.append(
                    f"| {arrow(d)} | {label(c, depth, warmup)} | {'all' if labels is None else labels} | {n_steps:,} | "
                    f"{Stat(r['test_acc'] for r in group).cell()} | {len(group)} | {time_s:.1f} |"
                )
    lines += ["", "## Plots", ""]
    for title, name, why in plots:
        lines.append(f"![{title}]({name})" if name else f"- {title}: not drawn ({why})")
        lines.append("")
    lines += ["`results.csv`: one row per run (settings, numbers, `run_dir` relative to this folder).", ""]
    (root / "report.md").write_text("\n".join(lines))


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


# --- plots: each returns (title, file name or None, why not drawn) -----------------------------------------
def plot_budgets(root: Path, rows: list[dict], warmup: int) -> tuple[str, str | None, str]:
    title = "Test accuracy vs labels per digit"
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
            x = [Stat(r["train_per_class"] for r in g).mean for g in groups]  # what the budget really gave
            y = [Stat(r["test_acc"] for r in g) for g in groups]
            dodged = [n * 1.04 ** (k - 1.5) for n in x]  # side by side, so coinciding error bars stay readable
            ax.errorbar(dodged, [100 * s.mean for s in y], yerr=[100 * (s.std or 0) for s in y], capsize=3,
                        label=label(c, 2, warmup), **look(c, 2))  # fmt: skip
            for b, n in zip(points, x, strict=True):
                ticks[n] = f"all\n(~{n:,.0f})" if b == math.inf else str(b) if round(n) == b else f"{b}\n(~{n:.0f})"
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training images per target digit (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{arrow(d)}: test accuracy (mean ± std over seeds)")
        ax.set_ylim(top=min(ax.get_ylim()[1], 102))  # a std bar above 100% is an artefact of mean ± std
        ax.grid(alpha=0.3)
    return title, save(fig, root, "accuracy_vs_labels.png", legend_columns=2), ""


def val_curve(root: Path, run_dir: str) -> dict[int, float]:
    """Validation accuracy per epoch (1-based) from the run's ``metrics.csv``."""
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
            epochs = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
            if not epochs:
                continue
            last_epoch = max(last_epoch, epochs[-1])
            mean = [100 * Stat(curve[e] for curve in curves).mean for e in epochs]
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
        for (i, j), count in zip(itertools.product(range(len(digits)), repeat=2), total.flatten(), strict=True):
            ax.text(j, i, int(count), ha="center", va="center", fontsize=8,
                    color="white" if count > total.max() / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(digits)), digits)
        ax.set_yticks(range(len(digits)), digits)
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        seeds = f"{len(group)} seeds summed" if len(group) > 1 else "1 seed"
        ax.set_title(f"{arrow(d)}: {acc(rows, d, 'transfer_frozen', budget).pct()} ({seeds})")
    return title, save(fig, root, "confusion.png"), ""
