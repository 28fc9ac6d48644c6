"""``python -m lit_transfer.study``: the transfer study of the notebook's CNN, run by run through the real CLI.

After Yosinski et al. 2014: per direction (5-9 -> 0-4 and back) and seed, one source run shared by frozen transfer
(AnB), fine-tuned transfer (AnB+), scratch, a random frozen backbone, the first n layers transferred, label budgets.
Each run is ``lit_transfer.cli.main`` in ``<out>/runs/<direction>/<condition>/<labels>/seed<k>/`` (execute.py), one
after another in this process (sequential.py) or as Ray tasks on every core and GPU of a machine or a cluster
(ray_executor.py). A run is finished once its ``done.json`` points at a ``results.json``: run again, an interrupted
study continues, and a run cut short continues from its own ``last.ckpt``.
"""

from __future__ import annotations

import inspect
import json
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Literal

import docstring_parser
from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

from lit_transfer.errors import UserError, count
from lit_transfer.files import atomic_write
from lit_transfer.speed.cpu import flush_denormals
from lit_transfer.study import sequential
from lit_transfer.study.execute import RunStopped, finished
from lit_transfer.study.plan import DIRECTIONS, WITHIN, main_budget, plan
from lit_transfer.study.report import write_csv, write_report
from lit_transfer.study.stats import row
from lit_transfer.study.stop import sigterm_as_ctrl_c

QUICK_BUDGETS = [3, 100]  # labels per class: a handful and a hundred, where transfer matters most
QUICK_SOURCE = 1000  # labels per source digit with --quick: the source runs took half of the quick study's time
MULTI_PROCESS = ("--trainer.devices", "--trainer.strategy", "--trainer.num_nodes")  # refused: see cli_args


def run_study(
    data_dir: str = "data/",
    dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist",
    download: bool = True,
    seeds: int | list[int] = 3,
    directions: list[Literal["59to04", "04to59", "mnist_to_fashion", "fashion_to_mnist"]] = WITHIN,
    epochs: int = 5,
    label_budgets: list[int | None] = [1, 3, 5, 10, 100, 1000, None],  # noqa: B006 (shown by --help; never mutated)
    depths: list[int] = [1, 2, 3],  # noqa: B006
    source_per_class: int | None = None,
    warmup_epochs: int = 1,
    batch_size: int = 128,
    out: str | None = None,
    preset: Literal["full", "seed", "batch_norm"] = "full",
    quick: bool = False,
    keep_checkpoints: bool = False,
    extra_args: list[str] = [],  # noqa: B006
    executor: Literal["sequential", "ray"] = "sequential",
    ray_address: str | None = None,
    threads_per_run: int | None = None,
    runs_per_gpu: int = 4,
) -> Path:
    """Run (or continue) the transfer study and write its report; returns the report folder.

    Args:
        data_dir: Root that holds ``MNIST/raw/`` (as ``--data.data_dir`` of the pipeline); across datasets also
            ``FashionMNIST/raw/`` (docs/study.md says how to put Debian's files there).
        dataset: The dataset of the directions within one dataset (``59to04``, ``04to59``).
        download: Download the files into ``data_dir`` when they are missing.
        seeds: How many seeds (0, 1, ...) or which ones; each seed also draws the validation split and the
            label-budget subset.
        directions: Which transfers: ``59to04`` (the notebook: digits 5-9, then 0-4) and ``04to59`` (its
            exercise); across datasets, every class of one then every class of the other: ``mnist_to_fashion``
            and ``fashion_to_mnist``. With ``--preset seed --seeds '[0]' --directions '[59to04]'`` the study is
            the notebook's two stages in one process: one start-up (imports, data, device) instead of two
            commands' worth.
        epochs: Epochs of every run, source and target (5 in the notebook).
        label_budgets: Training images per target class; ``null`` = all. The largest is the budget of the
            condition table, the freezing-depth runs and the confusion matrix.
        source_per_class: Training images per source digit for the shared source runs; ``null`` = all.
        depths: Yosinski et al.'s n: copy the first n weight layers from the source and freeze them (1 = conv1,
            2 = both convs, 3 = both convs and fc1).
        warmup_epochs: Epochs with the transferred backbone frozen before fine-tuning unfreezes it (at most
            ``epochs - 1``; 0 fine-tunes from the start, with the backbone at a tenth of the learning rate).
        batch_size: Images per batch (128 in the notebook).
        out: Report folder; by default ``reports/study``, with ``-quick``, ``-seed`` and a single direction
            appended for those subsets (e.g. ``reports/study-seed-59to04``), so none replaces the full study's.
        preset: ``full``: every condition; ``seed``: only the notebook's two stages, in each direction;
            ``batch_norm``: the network with BatchNorm, frozen with its statistics kept (lit_transfer's default)
            or drifting (Lightning's ``train_bn=True``), and scratch, at each label budget.
        quick: A smoke run of every condition, table and plot: the first seed only, target budgets 3 and 100,
            1000 images per source digit, 1 epoch.
        keep_checkpoints: Keep the target runs' checkpoints (source runs' are always kept: they are reused).
        extra_args: Further ``python -m lit_transfer fit`` arguments for every run, e.g.
            ``["--trainer.accelerator=cpu"]``; not devices, strategy or nodes: the study trains on one device.
        executor: ``sequential``: one run after another in this process, on one device. ``ray``: every run a Ray
            task, side by side on every core and GPU of this machine, or of a cluster (``--ray_address``); needs
            ``pip install -e ".[ray]"``. The same command lines, so the same numbers (docs/study-ray.md).
        ray_address: With ``--executor ray``: the cluster to join (``ray start --head`` prints it, e.g.
            ``10.0.0.1:6379``, or ``auto`` on one of its machines; ``RAY_ADDRESS`` also works). Unset: a local Ray
            instance with this machine's cores and GPUs, stopped at the end.
        threads_per_run: CPU threads (torch's) of each run on a CPU; ``null``: all cores with ``sequential`` (one run
            at a time), 1 with ``ray`` (cores / threads_per_run runs side by side on each machine; 1 was fastest on
            2 cores: benchmarks/RESULTS.md). The numbers depend on it slightly (torch's CPU kernels add in another
            order): the same value gives the same numbers with either executor.
        runs_per_gpu: With ``--executor ray`` where the cluster has GPUs: runs sharing one GPU at a time (each
            takes 1/runs_per_gpu of it and one CPU core); 0 runs on the CPUs only.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise UserError("--seeds is empty: give a number of seeds (e.g. 3) or a list (e.g. '[0,1,2]')")
    if not directions:
        raise UserError(f"--directions is empty: give one or more of {', '.join(DIRECTIONS)}, e.g. '[59to04]'")
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
    if executor == "ray":
        from lit_transfer.study import ray_executor  # imported here: the sequential study needs no Ray

        ray_executor.require_ray()
    elif ray_address:
        raise UserError(f"--ray_address {ray_address} is for --executor ray: add --executor ray, or drop it")
    if (threads_per_run is not None and threads_per_run < 1) or runs_per_gpu < 0:
        raise UserError(
            f"--threads_per_run is {threads_per_run}, --runs_per_gpu {runs_per_gpu}: give 1 or more and 0 or more"
        )
    if epochs < 1 or warmup_epochs < 0:
        raise UserError(f"--epochs is {epochs}, --warmup_epochs {warmup_epochs}: give at least 1 and 0")
    directions = list(dict.fromkeys(directions))
    # A subset of the runs gets a folder of its own by default: its report must not replace the full study's.
    parts = ["study"] + ["quick"] * quick + [preset] * (preset != "full")
    parts += directions if not set(WITHIN) <= set(directions) else []  # the cross-dataset ones join the full study
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
    done = {run: record for run in runs if (record := finished(root, run))}
    print(
        f"transfer study in {root}: {count(len(runs), 'run')}, {len(done)} already done, {len(runs) - len(done)} to go"
    )
    if executor == "ray":
        threads = threads_per_run or 1  # runs side by side: one core each unless told
        records, failed = ray_executor.run_all(root, runs, settings, done, ray_address, threads, runs_per_gpu)
    else:
        records, failed = sequential.run_all(root, runs, settings, done, threads_per_run)
    rows = [row(r, records[r], root) for r in runs if r in records]
    write_csv(root, rows)
    if failed:  # no report from part of the runs: its answer and tables would silently miss conditions
        print(f"{len(failed)} of {count(len(runs), 'run')} failed:")
        for why in failed.values():
            print(f"  {why}")
        raise UserError(
            f"{len(failed)} of {count(len(runs), 'run')} failed (listed above, each with its log.txt); results.csv "
            f"holds the {count(len(rows), 'finished run')} and no report was written: fix the cause and run the "
            "command again to continue"
        )
    write_report(root, rows, settings, main_budget(label_budgets, preset))
    print(f"report: {root / 'report.md'}")
    return root


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
        with sigterm_as_ctrl_c():  # a scheduler's SIGTERM stops the study as Ctrl-C does (stop.py)
            config = parser.parse_args(args)
            config.pop("config", None)
            return run_study(**config.as_dict())
    except (KeyboardInterrupt, RunStopped):  # RunStopped: a run in this process stopped on the signal first
        sys.exit("lit_transfer.study: interrupted: run the same command again to continue where it stopped")
    except UserError as err:
        sys.exit(f"lit_transfer.study: error: {err}")
    except ArgumentError as err:  # jsonargparse's parse errors, shown on one line
        sys.exit("lit_transfer.study: error: " + " ".join(line.strip() for line in str(err).splitlines()))


if __name__ == "__main__":
    main()
