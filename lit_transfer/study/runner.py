"""``python -m lit_transfer.study``: the transfer study of the notebook's CNN, run by run through the real CLI.

After Yosinski et al. 2014: per direction (5-9 -> 0-4 and back) and seed, one source run shared by frozen transfer
(AnB), fine-tuned transfer (AnB+), scratch, a random frozen backbone, the first n layers transferred, label budgets.
Each run is ``lit_transfer.cli.main`` in-process in ``<out>/runs/<direction>/<condition>/<labels>/seed<k>/`` and is
finished once its ``done.json`` points at a ``results.json``: run again, an interrupted study continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import shutil
import sys
import time
from argparse import ArgumentError
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import docstring_parser
from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

from lit_transfer import cli
from lit_transfer.errors import UserError
from lit_transfer.files import atomic_write
from lit_transfer.speed.cpu import flush_denormals
from lit_transfer.study.plan import DIRECTIONS, Run, cli_args, main_budget, plan
from lit_transfer.study.report import write_csv, write_report
from lit_transfer.study.stats import row

QUICK_BUDGETS = [10, 100]  # labels per class: the two small budgets, where transfer matters most
QUICK_SOURCE = 1000  # labels per source digit with --quick: the source runs took half of the quick study's time
FULL_IMAGES_PER_CLASS = 5400  # ~90% of MNIST's ~6,000 training images per digit: only for the first time estimate
# The time estimate's cost model, in image-epochs, from the full study's runs on the 2-core CPU (2026-11-27): a run's
# fixed cost (start, validation, test) ~4 s; an epoch with the backbone frozen (features cached) ~0.2 of a full one
# (29 s vs 88 s for 5 epochs), with only conv1 frozen ~0.85 (75 s). Fitted ratios, not promises: an estimate only.
EVAL_IMAGES = 6000
FROZEN_EPOCH = 0.2
CONV1_FROZEN_EPOCH = 0.85
MULTI_PROCESS = ("--trainer.devices", "--trainer.strategy", "--trainer.num_nodes")  # refused: see cli_args


def finished(root: Path, run: Run) -> dict[str, Any] | None:
    """The run's ``done.json`` when the ``results.json`` it points at (and a source run's checkpoint) still exist."""
    done = root / run.folder / "done.json"
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    needed = ["results.json"] + (["checkpoints/last.ckpt"] if run.condition == "pretrain" else [])
    return record if all((root / record["run_dir"] / name).is_file() for name in needed) else None


def execute(run: Run, settings: dict[str, Any], root: Path, source_ckpt: str | None) -> dict[str, Any]:
    """One run of the real CLI in-process; its output goes to ``log.txt`` so the console shows progress only."""
    folder = root / run.folder
    shutil.rmtree(folder, ignore_errors=True)  # leftovers of an interrupted attempt: start this run over
    folder.mkdir(parents=True)
    args = cli_args(run, settings, root, source_ckpt)
    start = time.perf_counter()
    with open(folder / "log.txt", "w") as log, into(log):
        print("python -m lit_transfer " + " ".join(args), flush=True)
        try:
            cli.main(args)
        except SystemExit as err:  # the CLI's one-line user errors, or Lightning's exit after Ctrl-C
            if isinstance(err.code, str):
                raise UserError(f"run {run.folder} failed: {err.code} (log: {folder / 'log.txt'})") from None
            raise UserError(
                f"run {run.folder} stopped (exit status {err.code}, e.g. Ctrl-C): run the study again to continue"
            ) from None
    wall = time.perf_counter() - start
    run_dir = max(folder.glob("version_*/results.json"), key=lambda p: p.stat().st_mtime).parent
    if not settings["keep_checkpoints"] and run.condition != "pretrain":
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # ~7 MB each; only source runs are reused
    record = {"run_dir": str(run_dir.relative_to(root)), "wall_s": wall, "args": args}
    atomic_write(folder / "done.json", json.dumps(record, indent=2) + "\n")
    return record


@contextlib.contextmanager
def into(log: IO[str]) -> Iterator[None]:
    """Send a run's prints, warnings and Lightning's info lines to ``log``; hide the study's argv from the CLI."""
    handlers = [h for name in ("lightning.pytorch", "lightning.fabric") for h in logging.getLogger(name).handlers]
    consoles = [h for h in handlers if type(h) is logging.StreamHandler]  # not pytest's capturing subclasses
    streams = [h.stream for h in consoles]
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns about extra command-line arguments otherwise
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            for h in consoles:
                h.setStream(log)
            yield
    finally:
        sys.argv = argv
        for h, stream in zip(consoles, streams, strict=True):
            h.setStream(stream)


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


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimated after the first run"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min" if hours else f"about {minutes} min {secs:02d} s"


def run_study(
    data_dir: str = "data/",
    dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist",
    download: bool = True,
    seeds: int | list[int] = 3,
    directions: list[Literal["59to04", "04to59"]] = ["59to04", "04to59"],  # noqa: B006
    epochs: int = 5,
    label_budgets: list[int | None] = [10, 100, 1000, None],  # noqa: B006 (shown by --help; never mutated)
    depths: list[int] = [1, 2, 3],  # noqa: B006
    source_per_class: int | None = None,
    warmup_epochs: int = 1,
    batch_size: int = 128,
    out: str | None = None,
    preset: Literal["full", "seed"] = "full",
    quick: bool = False,
    keep_checkpoints: bool = False,
    extra_args: list[str] = [],  # noqa: B006
) -> Path:
    """Run (or continue) the transfer study and write its report; returns the report folder.

    Args:
        data_dir: Root that holds ``MNIST/raw/`` (as ``--data.data_dir`` of the pipeline).
        dataset: Which torchvision dataset class reads the files.
        download: Download the files into ``data_dir`` when they are missing.
        seeds: How many seeds (0, 1, ...) or which ones; each seed also draws the validation split and the
            label-budget subset.
        directions: Which transfers: ``59to04`` (the notebook: digits 5-9, then 0-4) and ``04to59`` (its
            exercise). With ``--preset seed --seeds '[0]' --directions '[59to04]'`` the study is the notebook's
            two stages in one process: one start-up (imports, data, device) instead of two commands' worth.
        epochs: Epochs of every run, source and target (5 in the notebook).
        label_budgets: Training images per target digit; ``null`` = all. The largest is the budget of the
            condition table, the freezing-depth runs and the confusion matrix.
        source_per_class: Training images per source digit for the shared source runs; ``null`` = all.
        depths: Yosinski et al.'s n: copy the first n weight layers from the source and freeze them (1 = conv1,
            2 = both convs, 3 = both convs and fc1).
        warmup_epochs: Epochs with the transferred backbone frozen before fine-tuning unfreezes it (at most
            ``epochs - 1``; 0 fine-tunes from the start, with the backbone at a tenth of the learning rate).
        batch_size: Images per batch (128 in the notebook).
        out: Report folder; by default ``reports/study``, with ``-quick``, ``-seed`` and a single direction
            appended for those subsets (e.g. ``reports/study-seed-59to04``), so none replaces the full study's.
        preset: ``full``: every condition; ``seed``: only the notebook's two stages, in each direction.
        quick: A smoke run of every condition, table and plot: the first seed only, target budgets 10 and 100,
            1000 images per source digit, 1 epoch.
        keep_checkpoints: Keep the target runs' checkpoints (source runs' are always kept: they are reused).
        extra_args: Further ``python -m lit_transfer fit`` arguments for every run, e.g.
            ``["--trainer.accelerator=cpu"]``; not devices, strategy or nodes: the study trains on one device.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise UserError("--seeds is empty: give a number of seeds (e.g. 3) or a list (e.g. '[0,1,2]')")
    if not directions:
        raise UserError("--directions is empty: give one or both of 59to04 and 04to59, e.g. '[59to04]'")
    if quick:
        seed_list, epochs, label_budgets, source_per_class = seed_list[:1], 1, QUICK_BUDGETS, QUICK_SOURCE
    if source_per_class is not None and source_per_class < 1:
        raise UserError(f"--source_per_class is {source_per_class}: give a positive number or null (all)")
    if not label_budgets or any(b is not None and b < 1 for b in label_budgets):
        raise UserError(f"--label_budgets is {label_budgets}: give positive numbers or null (all), e.g. '[10,null]'")
    if not depths or any(not 1 <= n <= 3 for n in depths):
        raise UserError(f"--depths is {depths}: give weight-layer counts from 1 to 3, e.g. '[1,2,3]'")
    if any(a.startswith(MULTI_PROCESS) for a in extra_args):  # also --trainer.strategy.class_path=...
        raise UserError(
            f"--extra_args {extra_args}: the study trains in its own process on one device (a multi-device launcher "
            "would start the whole study again in each worker); for several devices use python -m lit_transfer fit"
        )
    if epochs < 1 or warmup_epochs < 0:
        raise UserError(f"--epochs is {epochs}, --warmup_epochs {warmup_epochs}: give at least 1 and 0")
    directions = list(dict.fromkeys(directions))
    # A subset of the runs gets a folder of its own by default: its report must not replace the full study's.
    parts = ["study"] + ["quick"] * quick + ["seed"] * (preset == "seed")
    parts += directions if set(directions) != set(DIRECTIONS) else []
    root = Path(out or f"reports/{'-'.join(parts)}").resolve()
    # Settings that change what a run means: a report folder holds runs of one setting only.
    settings = {
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "warmup_epochs": min(warmup_epochs, epochs - 1),
        "source_per_class": source_per_class,
        "extra_args": list(extra_args),
    }
    root.mkdir(parents=True, exist_ok=True)
    stored = root / "study.json"
    if stored.is_file() and (before := json.loads(stored.read_text())) != settings:
        changed = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v)
        raise UserError(f"{root} holds runs with other settings ({changed}): pass another --out or remove it")
    atomic_write(stored, json.dumps(settings, indent=2) + "\n")
    settings.update(data_dir=data_dir, download=download, keep_checkpoints=keep_checkpoints)

    runs = plan(preset, seed_list, label_budgets, sorted(set(depths)), source_per_class, directions)
    rows = run_all(root, runs, settings)
    write_report(root, rows, settings, main_budget(label_budgets, preset))
    print(f"report: {root / 'report.md'}")
    return root


def run_all(root: Path, runs: list[Run], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Run what is not finished yet, in order, with progress and time left; ``results.csv`` after every run."""
    records = {run: record for run in runs if (record := finished(root, run))}
    print(f"transfer study in {root}: {len(runs)} runs, {len(records)} already done, {len(runs) - len(records)} to go")
    walls = {run: record["wall_s"] for run, record in records.items()}
    sources = {(r.direction, r.seed): r for r in runs if r.condition == "pretrain"}
    started = time.perf_counter()
    for i, run in enumerate(runs, 1):
        if run in records:
            continue
        todo = [r for r in runs if r not in records]
        estimates = [estimate_s(r, walls, settings["epochs"], settings["warmup_epochs"]) for r in todo]
        left = None if None in estimates else sum(estimates)
        print(f"[{i}/{len(runs)}] {run.folder.as_posix()}  ({len(records)} done, {len(todo)} left, {duration(left)})")
        source = records.get(sources[run.direction, run.seed])
        source_ckpt = source and str(root / source["run_dir"] / "checkpoints" / "last.ckpt")
        records[run] = execute(run, settings, root, source_ckpt)
        walls[run] = records[run]["wall_s"]
        write_csv(root, [row(r, records[r], root) for r in runs if r in records])  # a partial study is readable
        print(f"    {walls[run]:.1f} s, test accuracy {100 * row(run, records[run], root)['test_acc']:.2f}%")
    print(f"all {len(runs)} runs done ({time.perf_counter() - started:.0f} s in this session); writing the report")
    rows = [row(r, records[r], root) for r in runs]
    write_csv(root, rows)
    return rows


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m lit_transfer.study", description=(__doc__ or "").split("\n\n")[0], exit_on_error=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file of these options (configs/study.yaml).")
    # Flags accept both ``--quick`` and ``--quick true``; jsonargparse's plain bool needs the value.
    signature = inspect.signature(run_study).parameters
    flags = [name for name, p in signature.items() if p.annotation in (bool, "bool")]
    parser.add_function_arguments(run_study, skip=set(flags))
    docs = {p.arg_name: p.description for p in docstring_parser.parse(run_study.__doc__ or "").params}
    for name in flags:
        default = signature[name].default
        parser.add_argument(f"--{name}", action=ActionYesNo, nargs="?", default=default, help=docs[name])
    return parser


def main(args: list[str] | None = None) -> Path:
    flush_denormals()  # before any parallel torch work (see lit_transfer/speed/cpu.py)
    parser = build_parser()
    try:
        config = parser.parse_args(args)
        config.pop("config", None)
        return run_study(**config.as_dict())
    except UserError as err:
        sys.exit(f"lit_transfer.study: error: {err}")
    except KeyboardInterrupt:
        sys.exit("lit_transfer.study: interrupted: run the same command again to continue where it stopped")
    except ArgumentError as err:  # jsonargparse's parse errors, shown on one line
        sys.exit("lit_transfer.study: error: " + " ".join(line.strip() for line in str(err).splitlines()))


if __name__ == "__main__":
    main()
