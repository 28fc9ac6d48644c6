"""Process-wide CPU settings that make this small CNN train 1.6x faster on a CPU (measured: benchmarks/RESULTS.md),
and the precision that suits this CPU, decided by its flags.

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


def amx_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices with AMX (Intel Sapphire Rapids and later, where a hypervisor
    passes it through): ``amx_bf16`` and ``amx_tile`` in /proc/cpuinfo."""
    flags = cpu_flags(cpuinfo)
    return flags is not None and {"amx_bf16", "amx_tile"} <= flags


def default_precision(cpuinfo: str | None = None) -> str:
    """The precision to train this CNN in on this CPU, by a feature test: ``"bf16-mixed"`` with AMX, else
    ``"32-true"``.

    Measured (benchmarks/RESULTS.md, issue 25): with AMX (a 2-core Xeon), bf16-mixed trained stage one 1.66x faster
    than 32-bit. Without AMX it was slower on both CPUs measured, which have AVX512-BF16: an AMD EPYC (3.3x
    slower) and a Xeon whose hypervisor hides AMX (a step 1.16x the CPU time, oneDNN's bf16 GEMM at 0.65x the
    float32 rate). A feature test, not a timed probe: the choice must not depend on the machine's load, or two
    runs of one command on one machine could train differently. The user's ``--trainer.precision`` wins.
    """
    return "bf16-mixed" if amx_bf16(cpuinfo) else "32-true"


def bf16_note(trainer, cpuinfo: str | None = None) -> str | None:
    """A word at the start of a CPU run in bf16, or in 32-bit where the CPU has AMX. Decided by the CPU's flags, not
    by one machine's figure, and true wherever it prints: it names the feature this CPU has or lacks and what was
    measured on CPUs like it."""
    if trainer.strategy.root_device.type != "cpu":
        return None
    if "bf16" not in str(trainer.precision):
        if str(trainer.precision) == "32-true" and amx_bf16(cpuinfo):  # the default, where bf16 would pay
            return (
                "this CPU multiplies bf16 matrices with AMX (amx_bf16): on the AMX machine measured, "
                "--trainer.precision bf16-mixed trained this CNN faster than 32-bit (benchmarks/RESULTS.md)"
            )
        return None
    if amx_bf16(cpuinfo):
        return (
            "this CPU multiplies bf16 matrices with AMX (amx_bf16): on the AMX machine measured, bf16-mixed trained "
            "this CNN faster than 32-bit (benchmarks/RESULTS.md); --trainer.precision 32-true for 32-bit results"
        )
    if native_bf16(cpuinfo):
        why = "has avx512_bf16 but no AMX (amx_bf16, amx_tile)"
    else:
        why = "has no native bf16 (no avx512_bf16 or amx_bf16: every bf16 operation is emulated)"
    return (
        f"this CPU {why}: bf16-mixed is not expected to train this CNN faster than 32-bit here; on the CPUs "
        "without AMX measured it was slower (benchmarks/RESULTS.md)"
    )
