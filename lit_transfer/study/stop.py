"""Stopping the study: Ctrl-C (SIGINT) and SIGTERM, which a cluster scheduler (SLURM, Kubernetes) sends before it
kills a job, both end it the same way: the runs finished so far are kept, a run cut short keeps its ``last.ckpt``,
and the same command continues (runner.py prints the one "interrupted" line).

SIGTERM is made to raise ``KeyboardInterrupt`` as Ctrl-C does, so one code path serves both: every ``finally`` on
the way out runs (the Ray executor stops its local Ray instance), where SIGTERM's default would end the process at
once. A run in progress catches both signals itself (callbacks/interrupt.py) and saves a checkpoint first.

An ignored signal stays ignored, as Python itself leaves an ignored SIGINT (it then installs no KeyboardInterrupt):
a shell without job control starts a background job with SIGINT ignored on purpose, so that a Ctrl-C meant for the
foreground command does not end it too (a terminal's Ctrl-C reaches only the foreground process group; without job
control the background job is in it). Tests that send SIGINT start their processes with it at its default, as a
terminal's foreground command has it (tests/process_guard.py, issue 27).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def ctrl_c(signum: int, frame: object) -> None:
    """A SIGTERM handler that stops the study as Ctrl-C does."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` while in this block, where SIGTERM has its default action (not ignored,
    no handler of an embedding program's own) and this is the main thread (the only one Python runs handlers in)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Put back the SIGTERM handler that was there before the block, unless it was the default action.

    ``ray.init`` replaces the process's SIGTERM handler with one that exits without a word (``sys.exit``); the
    study's own (``ctrl_c``) or an ignored SIGTERM is put back after it. Over a default action Ray's stays: it at
    least stops the local Ray instance on the way out.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else signal.SIG_DFL
    try:
        yield
    finally:
        if before != signal.SIG_DFL and before is not None:
            signal.signal(signal.SIGTERM, before)
