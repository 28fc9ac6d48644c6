"""The transfer study's report: ``results.csv`` and ``report.md`` (table, the answer derived from the numbers,
the plots drawn by ``plots.py``)."""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import platform
from pathlib import Path
from typing import Any

import lightning
import torch

from lit_transfer.errors import UserError, count
from lit_transfer.files import atomic_write
from lit_transfer.study.stats import CONDITIONS, Stat, acc, arrow, budget_text, label, select

SMOKE_STEPS = 100  # fewer optimizer steps than this in every target run: the report says it is a smoke test


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
    if select(rows, first, "transfer_frozen_bn_drift"):  # the batch_norm preset
        return batch_norm_answer(rows)
    source, target = first.split(" -> ")
    frozen = acc(rows, first, "transfer_frozen", budget)
    seeds = "one seed, so no spread to test the gaps against" if frozen.n == 1 else f"mean of {count(frozen.n, 'seed')}"
    across = [d for d in others if not d[0].isdigit()]  # "MNIST -> Fashion-MNIST": from one dataset to another
    others = [d for d in others if d not in across]
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
            f"With only {count(small, 'label')} per class transfer reaches {f_small.pct()} against {s_small.pct()} "
            "from "
            f"scratch ({versus(f_small, s_small)}): the gap to scratch "
            + ("widens when labels are scarce." if wider else "does not widen when labels are scarce.")
        )
    tune = acc(rows, first, "transfer_finetune", budget)
    sentences.append(
        f"Fine-tuning the transferred backbone gives {tune.pct()} ({versus(tune, frozen, 'against keeping it frozen')})"
        f"{reverse}."
    )
    if across and select(rows, across[0], "scratch"):
        sentences.append(across_datasets(rows, across, budget, small))
    return " ".join(sentences)


def across_datasets(rows: list[dict], directions: list[str], budget: int | None, small: int | None) -> str:
    """Where transfer stops paying (Yosinski et al.'s distance between tasks): frozen transfer against scratch from
    one dataset to another, at the main budget and the smallest."""
    parts = []
    for d in directions:
        said = []
        for labels in dict.fromkeys([budget, small]):
            frozen, scratch = acc(rows, d, "transfer_frozen", labels), acc(rows, d, "scratch", labels)
            verdict = "helps" if frozen.mean > scratch.mean else "hurts"
            if real_gap(frozen, scratch) is False:
                verdict = "makes no measurable difference"
            said.append(
                f"with {budget_text(labels)} frozen transfer {verdict} ({frozen.pct()} against {scratch.pct()} from "
                f"scratch, {versus(frozen, scratch)})"
            )
        parts.append(f"{arrow(d)}: " + "; ".join(said))
    return "Across datasets, " + ". ".join(parts) + "."


def batch_norm_answer(rows: list[dict]) -> str:
    """What letting the frozen backbone's BatchNorm statistics drift costs, per direction and label budget."""
    parts, gaps = [], []
    for d in dict.fromkeys(r["direction"] for r in rows):
        budgets = sorted({r["labels_per_class"] for r in select(rows, d, "transfer_frozen_bn_drift")},
                         key=lambda b: (b is None, b or 0))  # fmt: skip
        said = []
        for labels in budgets:
            kept, drift = acc(rows, d, "transfer_frozen", labels), acc(rows, d, "transfer_frozen_bn_drift", labels)
            scratch = acc(rows, d, "scratch", labels)
            gaps.append((drift.mean - kept.mean, d, labels))
            said.append(
                f"{budget_text(labels)}: {kept.pct()} kept, {drift.pct()} drifting ({versus(drift, kept)}), "
                f"{scratch.pct()} from scratch"
            )
        parts.append(f"{arrow(d)}: " + "; ".join(said))
    worst, d, labels = min(gaps, key=lambda g: g[0])
    summary = (
        f"Drifting costs most at {arrow(d)} with {budget_text(labels)}: {100 * -worst:.2f} points."
        if worst < 0
        else "Drifting cost nothing measurable here: it never scored below keeping the statistics."
    )
    return (
        "With BatchNorm after each convolution, the frozen backbone's statistics kept (lit_transfer's "
        "FreezeFeatures) against drifting with the target data (Lightning's `train_bn=True`). "
        + ". ".join(parts)
        + ". "
        + summary
    )


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


def write_csv(root: Path, rows: list[dict]) -> None:
    """``results.csv``, one row per run, written atomically; a label budget of ``None`` is written ``all``."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["direction"])
    writer.writeheader()
    for r in rows:
        labels = "all" if r["labels_per_class"] is None else r["labels_per_class"]
        writer.writerow({**r, "labels_per_class": labels, "digits": " ".join(map(str, r["digits"]))})
    atomic_write(root / "results.csv", text.getvalue())


def write_report(root: Path, rows: list[dict], settings: dict[str, Any], budget: int | None) -> None:
    warmup = settings["warmup_epochs"]
    try:  # matplotlib is the study extra's, not a core dependency: only the study draws
        from lit_transfer.study.plots import draw
    except ModuleNotFoundError as err:
        raise UserError(f"the study's plots need {err.name}: pip install -e '.[study]' (or '.[all]')") from None
    plots = draw(root, rows, budget, warmup)
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# Transfer study: how well do features learned on one set of digits classify the other?",
        "",
        f"{count(len(rows), 'run')} of the notebook's CNN through `python -m lit_transfer fit`: {settings['dataset']}, "
        f"{settings['epochs']} epoch(s) per run, batch {settings['batch_size']}, seeds {seeds}, source runs on "
        f"{budget_text(settings['source_per_class'])}. "
        f"Device {', '.join(sorted({r['device'] for r in rows}))} ({platform.processor() or platform.machine()}, "
        f"{count(os.cpu_count(), 'core')}), torch {torch.__version__}, lightning {lightning.__version__}, "
        f"{datetime.date.today()}. Total training time {sum(r['train_time_s'] for r in rows) / 60:.1f} min."
        + (" Every run's network has BatchNorm after each convolution." if rows and rows[0].get("batch_norm") else ""),
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
        "| direction | condition | labels per class | optimizer steps | test accuracy % | seeds | training time s |",
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
    atomic_write(root / "report.md", "\n".join(lines))
