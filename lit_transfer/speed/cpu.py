"""Process-wide CPU settings that make this small CNN train 1.6x faster on a CPU (measured: benchmarks/RESULTS.md),
and the CPU's flags (for benchmarks/floor.py). Whether bf16 pays on this CPU is measured, not read from its flags:
``lit_transfer/command_line/precision.py``.

Written by hand: they are one-line calls, but each needs its reason next to it, and no library bundles them.
"""

from __future__ import annotations

import ctypes
import os
import warnings

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters (malloc.h)


GRAIN = 32768  # elements per chunk below which torch runs an elementwise op on one thread (at::internal::GRAIN_SIZE)


def flush_denormals() -> None:
    """Flush denormal floats to zero, on this thread and on the threads it starts from now on.

    Denormals appear once the weights train and make x86 CPUs 3-4x slower; TensorFlow flushes them too. The flag
    is per thread and a new thread copies its creator's, so call this before torch's first parallel operation:
    OpenMP's worker threads start then and keep the mode they started with (``python -m lit_transfer`` calls it
    first thing).
    """
    torch.set_flush_denormal(True)


def denormals_leak() -> bool:
    """True when some of torch's CPU threads still compute denormals (they started before ``flush_denormals``)."""
    # 1e-30 * 1e-10 = 1e-40 is a float32 denormal; spread over every thread, it must come out as 0 on each.
    probe = torch.full((GRAIN * max(1, torch.get_num_threads()),), 1e-30).mul_(1e-10)
    # Tested as bits: a float comparison on a flushing thread would read a leaked denormal as zero.
    return bool(probe.view(torch.int32).any())


def tune_cpu(processes: int = 1) -> None:
    """Call once per process before training on the CPU (the command line does); ``processes``: training
    processes on this machine."""
    flush_denormals()
    if denormals_leak():
        warnings.warn(
            "lit_transfer: torch's CPU threads started before denormal floats were flushed, so some of them still "
            "compute denormals and training may run up to 3x slower: start through `python -m lit_transfer`, or "
            "call lit_transfer.speed.cpu.flush_denormals() before any other torch work",
            stacklevel=2,
        )
    # glibc serves each block over 128 KiB with a fresh mmap and unmaps it when freed, so every step page-faults
    # its activations (several MB) back in: ~13% of a step here, as kernel time. Keep freed memory for reuse.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit systems
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass
    # DDP on the CPU: each process would otherwise start one thread per core (oversubscription).
    if processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags from Linux's /proc/cpuinfo (or the text given); None where it cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux
            return None
    return set(cpuinfo.split())


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); True where the flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    return flags is None or bool(flags & {"avx512_bf16", "amx_bf16"})
