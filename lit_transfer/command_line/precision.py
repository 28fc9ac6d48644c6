"""The note on bf16-mixed at the start of a CPU run, from a short timed probe on this machine, cached per machine.

No CPU flag tells whether bf16 pays: the same avx512_bf16 came with bf16-mixed 1.4x faster on an AMD EPYC Zen 4 and
1.35-1.4x slower on a Xeon whose AMX the hypervisor hid (benchmarks/RESULTS.md). So a few training steps of this CNN
are timed in each precision, once per machine and torch version, and the note names the ratio measured. The probe
is written here because no library measures a precision on the machine at hand.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lit_transfer.files import atomic_write
from lit_transfer.model import Backbone, Head
from lit_transfer.module import keras_adadelta

# A note calls bf16-mixed faster (or slower) only past this ratio of step times: a short probe on a shared machine
# moves by some percent, and a note must be true wherever it prints.
CLEAR_RATIO = 1.15
PROBE_BATCH = 128  # the configs' batch: the step the note speaks of
PROBE_STEPS = 12  # timed training steps per precision, interleaved, after one warm-up each: ~1 s on 2 cores


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (or the text given), else the platform's processor string."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def measure_bf16_speedup() -> float:
    """How many times faster one training step of this CNN (batch 128: forward, backward and Adadelta's update, as
    stage one runs it) is under bf16-mixed than in 32-bit on this CPU: the median of a few steps of each,
    interleaved."""
    state = torch.get_rng_state()  # put back below: training's dropout draws from it next
    torch.manual_seed(0)  # the probe's weights and inputs
    net = torch.nn.Sequential(Backbone(), Head(5)).to(memory_format=torch.channels_last)
    optimizer = keras_adadelta(net.parameters())  # as Lightning's bf16-mixed: the update in 32-bit either way
    images = torch.rand(PROBE_BATCH, 1, 28, 28)
    labels = torch.randint(0, 5, (PROBE_BATCH,))
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for step in range(PROBE_STEPS + 1):
            for bf16 in (False, True):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(net(images), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:  # the first step of each warms up oneDNN's kernels
                    times[bf16].append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(state)
    return statistics.median(times[False]) / statistics.median(times[True])


def bf16_speedup(
    cache_dir: Path | None = None, measure: Callable[[], float] = measure_bf16_speedup, cpuinfo: str | None = None
) -> float:
    """:func:`measure_bf16_speedup` for this machine, measured once and kept in ``<cache_dir>/bf16-speedup.json``
    (default: the user's cache folder, as the image cache), keyed by the CPU's model and torch's version. A cache
    that cannot be read or holds something else is measured again and replaced."""
    path = (cache_dir or default_cache_dir()) / "bf16-speedup.json"
    key = f"{cpu_model(cpuinfo)} | torch {torch.__version__}"
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    ratio = known.get(key)
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio < 100:
        return float(ratio)
    ratio = float(measure())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({**known, key: round(ratio, 3)}, indent=1) + "\n")
    except OSError:  # a read-only home: measured again next time, still true
        pass
    return ratio


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_transfer``, else ``~/.cache/lit_transfer``: never the user's data folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lit_transfer"


def bf16_note(trainer: Any, speedup: Callable[[], float] = bf16_speedup) -> str | None:
    """A word at the start of a run on the CPU about bf16-mixed, from a short timed probe on this machine (no CPU
    flag tells: the same avx512_bf16 came with bf16 1.4x faster on an AMD EPYC Zen 4 and 1.4x slower on a Xeon
    whose AMX was hidden). ``speedup``: the measured ratio, bf16-mixed's step against 32-bit's.

    A 32-bit run hears of bf16 only where it measured clearly faster; a bf16 run is told when it measured clearly
    slower, or about as fast. The default precision stays 32-bit either way, so the documented numbers hold."""
    if trainer.strategy.root_device.type != "cpu":
        return None
    precision = str(trainer.precision)
    if precision != "32-true" and "bf16" not in precision:
        return None
    ratio = speedup()
    # What was measured: the training step alone (a whole run also validates, tests and loads: it gains less).
    step = "a training step of this CNN measured on this CPU (a short probe, kept per machine)"
    if precision == "32-true":
        if ratio < CLEAR_RATIO:
            return None
        return (
            f"under bf16-mixed {step} is {ratio:.1f}x faster than in 32-bit: --trainer.precision bf16-mixed reaches "
            "the same accuracy over 3 seeds (docs/results.md; whole runs gain less: docs/lightning.md)"
        )
    if ratio >= CLEAR_RATIO:
        return None
    if ratio <= 1 / CLEAR_RATIO:
        return f"under bf16-mixed {step} is {1 / ratio:.1f}x slower than in 32-bit: --trainer.precision 32-true"
    return f"under bf16-mixed {step} is about as fast as in 32-bit ({ratio:.2f}x): --trainer.precision 32-true"
