"""Denormal flushing reaches every CPU thread: the flag is per thread, so it must be set before the pool starts.
And the precision chosen for a CPU by its flags: bf16 only where AMX multiplies it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lit_transfer.speed.cpu import amx_bf16, default_precision

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
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(pool_first=pool_first)], capture_output=True, text=True, check=True
    ).stdout.split()
    # set first: no thread computes denormals, no warning; set late: the worker leaks, and tune_cpu says so
    assert out == [str(pool_first), str(pool_first)]


SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n"
AMX_HIDDEN = "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_fp16 avx_vnni\n"  # Xeon under a hypervisor without AMX
ZEN4 = "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"


@pytest.mark.parametrize(
    ("cpuinfo", "precision"),
    [(SAPPHIRE_RAPIDS, "bf16-mixed"), (AMX_HIDDEN, "32-true"), (ZEN4, "32-true"), ("flags : avx2 fma\n", "32-true")],
)
def test_default_precision_is_bf16_only_where_amx_multiplies_it(cpuinfo: str, precision: str) -> None:
    assert default_precision(cpuinfo) == precision


def test_amx_needs_both_flags() -> None:
    assert not amx_bf16("flags : amx_bf16\n")  # no amx_tile: the tiles are not enabled
    assert amx_bf16(SAPPHIRE_RAPIDS) and not amx_bf16(AMX_HIDDEN)
    assert not amx_bf16("") and default_precision("") == "32-true"
