"""Denormal flushing reaches every CPU thread: the flag is per thread, so it must be set before the pool starts."""

from __future__ import annotations

import sys

import process_guard
import pytest

PROBE = """
import warnings, torch
torch.set_num_threads(2)
if {pool_first}:
    torch.ones(1 << 22).mul_(2)  # a parallel op: OpenMP's worker threads start here
from lit_transfer.speed.cpu import denormals_leak, flush_denormals, tune_cpu
flush_denormals()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tune_cpu()
print(denormals_leak(), any("started before denormal floats were flushed" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize("pool_first", [False, True])
def test_flush_reaches_every_thread_only_when_set_first(pool_first: bool) -> None:
    done = process_guard.run(
        [sys.executable, "-c", PROBE.format(pool_first=pool_first)], timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.split()
    # set first: no thread computes denormals, no warning; set late: the worker leaks, and tune_cpu says so
    assert out == [str(pool_first), str(pool_first)]
