"""Processes the tests start: ``started``/``run`` start each in a session of its own with SIGINT and SIGTERM at their
default actions and end its whole process group on the way out, failures and timeouts included; a check at the end
of the session fails the suite if any process the tests started is still alive. Registered from conftest.py.

Why the default actions (issue 27): a shell without job control (a script, ``nohup ... &``) starts a background job
with SIGINT ignored, every child inherits that, and Python then installs no KeyboardInterrupt; the study, like
Python, leaves an ignored SIGINT ignored (lit_transfer/study/stop.py says why), so a test's SIGINT reached nothing
and the study's Ctrl-C test hung whenever the suite ran in the background. A test sends what a terminal sends to its
foreground command, which has SIGINT at its default: so the tests start their processes that way.

Why an environment variable for the check: a process whose parent died is adopted by init, out of reach of a walk
down the pytest process's children, and Ray's processes outlive their driver that way; the variable is inherited
by every descendant (environments are copied from ``os.environ``) and readable in ``/proc/<pid>/environ``.
No library does this (psutil lists descendants only while the chain of parents holds, the same walk).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSIONS = "LIT_TRANSFER_TEST_SESSIONS"  # this session's token, after any outer session's (pytest run by a test)
TOKEN = pytest.StashKey[str]()
GRACE_S = 30  # for processes on their way out at the end (Ray's stop their workers, then themselves)


def default_signals() -> None:
    """``preexec_fn``: SIGINT and SIGTERM at their default actions in the child, whatever pytest inherited."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def started(cmd: list[str], **popen: object) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(cmd, **popen)`` as a process group of its own (``os.killpg(proc.pid, ...)`` signals it and
    all it started, as a terminal's Ctrl-C does), SIGINT and SIGTERM at their defaults (unless ``preexec_fn`` says
    otherwise); on the way out the whole group is killed and the process reaped."""
    proc = subprocess.Popen(cmd, start_new_session=True, **{"preexec_fn": default_signals, **popen})
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left in the group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()  # its pipes stay with their reader (a thread may still be draining one)


def run(cmd: list[str], timeout: float, capture_output: bool = False, **popen: object) -> subprocess.CompletedProcess:
    """``subprocess.run`` through ``started``: on a timeout (or any error) the whole process group is killed, not
    only the first process."""
    if capture_output:
        popen |= {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with started(cmd, **popen) as proc:
        stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--leftover-grace-s", type=float, default=GRACE_S,
        help="seconds the end-of-session check waits for processes the tests started to exit",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    token = f"{os.getpid()}.{time.time_ns()}"
    config.stash[TOKEN] = token
    os.environ[SESSIONS] = ":".join(filter(None, [os.environ.get(SESSIONS), token]))


def ours(token: str) -> dict[int, str]:
    """Every live process but this one whose environment holds ``token``: pid -> command line."""
    prefix, found = f"{SESSIONS}=".encode(), {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")  # a zombie's is empty: it has exited
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile, or another user's
            continue
        sessions = next((e[len(prefix) :] for e in env if e.startswith(prefix)), b"")
        if token.encode() in sessions.split(b":"):
            found[int(proc.name)] = cmdline
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(pytestconfig: pytest.Config) -> Iterator[None]:
    """Fails the last test's teardown (so the suite) if a process the tests started outlives them all."""
    yield
    if not Path("/proc/self/environ").exists():  # not Linux: nothing to look at
        return
    token = pytestconfig.stash[TOKEN]
    deadline = time.monotonic() + pytestconfig.getoption("leftover_grace_s")
    while (left := ours(token)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "processes the tests started are still running:\n" + "\n".join(
        f"  {pid} {cmd[:200]}" for pid, cmd in sorted(left.items())
    )
