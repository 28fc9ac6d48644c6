"""``--executor sequential`` (the default): the study's runs one after another, in this process, on one device."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import torch

from lit_transfer.errors import count
from lit_transfer.study.execute import RunFailed, execute, source_checkpoint
from lit_transfer.study.plan import Run
from lit_transfer.study.progress import duration, time_left
from lit_transfer.study.report import write_csv
from lit_transfer.study.stats import row


def run_all(
    root: Path, runs: list[Run], settings: dict[str, Any], records: dict[Run, dict], threads: int | None = None
) -> tuple[dict[Run, dict], dict[Run, str]]:
    """Run what is not finished yet (``records``: the finished runs), in order, with progress and time left;
    ``results.csv`` after every run; ``threads``: torch's CPU threads (``None``: torch's default, every core).
    Returns every finished run's record and why each failed run failed."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)  # for the whole process (its runs run one at a time), until the end
    try:
        return run_each(root, runs, settings, records)
    finally:
        torch.set_num_threads(before)


def run_each(
    root: Path, runs: list[Run], settings: dict[str, Any], records: dict[Run, dict]
) -> tuple[dict[Run, dict], dict[Run, str]]:
    records, failed = dict(records), {}
    walls = {run: record["wall_s"] for run, record in records.items()}
    sources = {(r.direction, r.seed): r for r in runs if r.condition == "pretrain"}
    started = time.perf_counter()
    for i, run in enumerate(runs, 1):
        if run in records:
            continue
        todo = [r for r in runs if r not in records and r not in failed]
        print(f"[{i}/{len(runs)}] {run.folder.as_posix()}  ({len(records)} done, {len(todo)} left, "
              f"{duration(time_left(todo, walls, settings))})")  # fmt: skip
        source = sources[run.direction, run.seed]
        if run.condition.startswith("transfer") and source in failed:
            failed[run] = f"{run.folder.as_posix()}: not run, its source run {source.folder.as_posix()} failed"
            print(f"    {failed[run]}")
            continue
        try:
            source_ckpt = source_checkpoint(root, records.get(source))
            where = {"executor": "sequential", "host": socket.gethostname()}
            records[run] = execute(run, settings, root, source_ckpt, where)
        except RunFailed as err:  # reported; the runs that do not need this one go on
            failed[run] = str(err)
            print(f"    failed: {err}")
            continue
        walls[run] = records[run]["wall_s"]
        write_csv(root, [row(r, records[r], root) for r in runs if r in records])  # a partial study is readable
        print(f"    {walls[run]:.1f} s, test accuracy {100 * row(run, records[run], root)['test_acc']:.2f}%")
    print(f"{len(records)} of {count(len(runs), 'run')} done ({time.perf_counter() - started:.0f} s in this session)")
    return records, failed
