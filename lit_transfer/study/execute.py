"""One run of the study: the real CLI in-process, continued from its own ``last.ckpt`` when an attempt was cut short.

Both executors (``sequential.py``, ``ray_executor.py``) run every run through ``execute``, so a run means the same
command line, and leaves the same folder, whichever executor ran it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lit_transfer import cli
from lit_transfer.errors import UserError
from lit_transfer.files import atomic_write
from lit_transfer.study.plan import Run, cli_args

ARGPARSE_ERROR = 2  # jsonargparse's exit status for a refused command line (Lightning exits 1 after Ctrl-C)


class RunFailed(UserError):
    """One run failed for a reason of its own (bad option, NaN, an exception): the study reports it, the others go
    on, and the study exits non-zero at the end."""


class RunStopped(UserError):
    """One run was stopped by a signal (Ctrl-C, SIGTERM; callbacks/interrupt.py saved its ``last.ckpt`` first): the
    sequential study stops as on Ctrl-C; the same command continues the run."""


def finished(root: Path, run: Run) -> dict[str, Any] | None:
    """The run's ``done.json`` when the ``results.json`` it points at (and a source run's checkpoint) still exist."""
    done = root / run.folder / "done.json"
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    needed = ["results.json"] + (["checkpoints/last.ckpt"] if run.condition == "pretrain" else [])
    return record if all((root / record["run_dir"] / name).is_file() for name in needed) else None


def source_checkpoint(root: Path, record: dict[str, Any] | None) -> str | None:
    """The checkpoint a source run's target runs start from."""
    return record and str(root / record["run_dir"] / "checkpoints" / "last.ckpt")


def last_checkpoint(folder: Path) -> Path | None:
    """The ``last.ckpt`` of the latest attempt of this run that wrote one, or ``None``.

    Each attempt claims the next ``version_<n>`` (cli.claim_run_dir) and continues from the furthest checkpoint of
    the ones before, so the highest such ``n`` holds the furthest state. ``AtomicCheckpointIO`` renames whole files
    into place: a ``last.ckpt`` is never half-written.
    """
    found = [(p.parts[-3][8:], p) for p in folder.glob("version_*/checkpoints/last.ckpt")]
    attempts = [(int(n), p) for n, p in found if n.isdigit()]
    return max(attempts)[1] if attempts else None


def execute(run: Run, settings: dict[str, Any], root: Path, source_ckpt: str | None, where: dict[str, Any]) -> dict:
    """One run of the real CLI in-process, its output to ``log.txt`` so the console shows progress only.

    An earlier attempt that was cut short (the process killed, Ctrl-C) left a ``last.ckpt``: the run continues from
    it (``fit --ckpt_path``, the CLI's same-stage resume) and ends with the numbers of an uninterrupted run; without
    one, the attempt's leftovers are removed and the run starts over. ``where`` (executor, host) goes into
    ``done.json``. Raises ``RunFailed`` for a failure of this run, ``RunStopped`` when it was stopped (Ctrl-C, SIGTERM).
    """
    folder = root / run.folder
    resume = last_checkpoint(folder)
    if resume is None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    args = cli_args(run, settings, root, source_ckpt) + ([f"--ckpt_path={resume}"] if resume else [])
    log_path = folder / "log.txt"
    start, started = time.perf_counter(), time.time()
    with open(log_path, "a" if resume else "w") as log, into(log):  # a continued run's log keeps every attempt
        if resume:
            print(f"-- continuing from {resume}")
        print("python -m lit_transfer " + " ".join(args), flush=True)
        try:
            cli.main(args)
        except SystemExit as err:  # the CLI's one-line user errors, a refused command line, or Ctrl-C
            if isinstance(err.code, str) or err.code == ARGPARSE_ERROR:
                why = err.code if isinstance(err.code, str) else "the command line was refused"
                print(why, file=sys.stderr)  # into the log too, where a shell would have shown it
                raise RunFailed(f"{run.folder.as_posix()}: {why} (log: {log_path})") from None
            raise RunStopped(  # Interrupted's 128 + signal number, or Lightning's 1 after a KeyboardInterrupt
                f"run {run.folder.as_posix()} stopped (exit status {err.code}, e.g. Ctrl-C or SIGTERM): run the study "
                "again to continue"
            ) from None
        except Exception as err:  # a crash of this run only: its traceback to its log, the study goes on
            traceback.print_exc(file=log)
            first = (str(err).splitlines() or [""])[0]
            raise RunFailed(f"{run.folder.as_posix()}: {type(err).__name__}: {first} (log: {log_path})") from None
    wall = time.perf_counter() - start
    run_dir = max(folder.glob("version_*/results.json"), key=lambda p: p.stat().st_mtime).parent
    if not settings["keep_checkpoints"] and run.condition != "pretrain":
        for attempt in folder.glob("version_*/checkpoints"):  # ~7 MB each; only source runs are reused
            shutil.rmtree(attempt, ignore_errors=True)
    record = {"run_dir": str(run_dir.relative_to(root)), "wall_s": wall, "args": args, **where}
    record |= {"started": started, "finished": time.time()}  # Unix time, this attempt's (which runs overlapped)
    if resume:
        record["continued_from"] = str(resume.relative_to(root))
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
