"""Process-wide CPU settings that make this small CNN train 1.6x faster on a CPU (measured: benchmarks/RESULTS.md).

Written by hand: they are one-line calls, but each needs its reason next to it, and no library bundles them.
"""

from __future__ import annotations

import ctypes
import os

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt() parameters (malloc.h)


def tune_cpu(processes: int = 1) -> None:
    """Call once per process before training on the CPU; ``processes``: training processes on this machine."""
    # Denormal floats appear once the weights train and make x86 CPUs 3-4x slower; TensorFlow flushes them too.
    torch.set_flush_denormal(True)
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
