"""Where a training step's time goes beyond its GEMM floor: one stage's step as lit_transfer runs it on the CPU
(the fast CPU layers, Adadelta with the Keras values, batch 128), outside Lightning's loop.

    python benchmarks/profile_step.py --stage one [--steps 20]     # torch.profiler, ops by self time
    python benchmarks/profile_step.py --stage one --steps 5 --onednn   # oneDNN's primitives (ONEDNN_VERBOSE=1)
    python benchmarks/profile_step.py --stage one --steps 10 --compare_compiled 5   # eager against torch.compile

Stage two is the head on cached features (the frozen backbone's output gathered by index, its dropout, the head).
The step is timed without the profiler first (median of ``--steps``), then profiled; with ``--onednn`` it runs
itself again with ``ONEDNN_VERBOSE=1`` and sums the verbose lines of the timed steps per primitive instead.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from lit_transfer.model import FEATURE_DIM, Backbone, Head
from lit_transfer.speed.cpu import tune_cpu
from lit_transfer.speed.layers import to_fast_cpu_layers

BATCH = 128


def cpu_net(fast: bool = True) -> nn.Module:
    """The notebook's CNN for 5 classes (``backbone`` and ``head``), seeded: with lit_transfer's fast CPU layers
    swapped in, as it trains on the CPU (``fast``), or with the notebook's layers as torch has them."""
    torch.manual_seed(0)
    net = nn.Module()
    net.backbone, net.head = Backbone(), Head(5)
    if fast:
        to_fast_cpu_layers(net)
    return net


def make_step(
    stage: str,
    foreach: bool | None = None,
    bf16: bool = False,
    compiled: bool = False,
    fast: bool = True,
    compiled_optimizer: bool = False,
):
    """A closure doing one training step of ``stage`` (zero_grad, forward, backward, optimizer step); ``bf16``:
    the forward under bf16 autocast, as Lightning's ``bf16-mixed`` runs it on the CPU; ``compiled``: the forward
    (and through AOTAutograd its backward) compiled by ``torch.compile``'s default backend, inductor;
    ``compiled_optimizer``: Adadelta's step compiled too (its passes fused into one loop); ``fast``:
    lit_transfer's fast CPU layers, else the notebook's layers as torch has them."""
    net = cpu_net(fast)
    labels = torch.randint(0, 5, (BATCH,))
    if stage == "one":
        images = torch.rand(BATCH, 1, 28, 28)
        params = list(net.parameters())

        def forward() -> torch.Tensor:
            return net.head(net.backbone(images))
    else:
        net.backbone.requires_grad_(False)
        cache = torch.rand(27536, FEATURE_DIM)  # stage two's cached features, flattened (speed/feature_cache.py)
        params = list(net.head.parameters())

        def forward() -> torch.Tensor:
            with record_function("gather cached features"):
                features = cache[torch.randint(0, len(cache), (BATCH,))]
            return net.head(net.backbone.from_features(features))

    optimizer = torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7, foreach=foreach)
    if compiled:
        forward = torch.compile(forward)
    optimizer_step = torch.compile(optimizer.step) if compiled_optimizer else optimizer.step

    def step() -> None:
        optimizer.zero_grad()
        with record_function("forward"), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(), labels)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer.step"):
            optimizer_step()

    return step


def timed(step, steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds per step over ``steps`` steps, after three untimed ones (on a loaded machine
    the CPU time of a one-thread run is the steadier figure)."""
    for _ in range(3):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


MARK = "--- timed steps ---"


def onednn_summary(text: str, steps: int) -> None:
    """Sum oneDNN's verbose exec lines after MARK (``onednn_verbose,v1,primitive,exec,cpu,<primitive>,<impl>,
    <prop>,...,<ms>``)."""
    total: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    for line in text.split(MARK, 1)[1].splitlines():
        fields = line.split(",")
        if len(fields) > 8 and fields[2] == "primitive" and fields[3] == "exec":
            total[(fields[5], fields[6], fields[7])] += float(fields[-1])
    print(f"oneDNN primitives, ms per step (sum over {steps} steps / {steps}):")
    for (primitive, impl, prop), ms in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"{ms / steps:8.2f}  {primitive:12s} {prop:18s} {impl}")
    print(f"{sum(total.values()) / steps:8.2f}  all oneDNN primitives")


def compare_bf16(stage: str, steps: int, repeats: int) -> None:
    """Median ms per step (wall and CPU) of 32-bit and bf16-mixed, interleaved, and torch.mm's rate in each."""
    steps_by = {"32-true": make_step(stage), "bf16-mixed": make_step(stage, bf16=True)}
    dtypes = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps_by}
    mm: dict[str, list[float]] = {name: [] for name in steps_by}
    a = torch.randn(1024, 1024)
    for _ in range(repeats):
        for name, step in steps_by.items():
            times[name].append(timed(step, steps))
            x = a.to(dtypes[name])
            torch.mm(x, x)
            c = time.process_time()
            for _ in range(5):
                torch.mm(x, x)
            mm[name].append(5 * 2 * 1024**3 / (time.process_time() - c) / 1e9)
    print(f"stage {stage}, {torch.get_num_threads()} threads, batch {BATCH}: medians of {repeats} x {steps} steps")
    for name, t in times.items():
        wall, cpu = (statistics.median(x[i] for x in t) * 1e3 for i in (0, 1))
        rate = statistics.median(mm[name])
        print(f"{name:11s} {wall:7.1f} ms wall {cpu:7.1f} ms CPU per step; torch.mm 1024^3: {rate:5.0f} GFLOP/s of CPU")


def compare_compiled(stage: str, steps: int, repeats: int) -> None:
    """Median ms per step (wall), interleaved: lit_transfer's eager step, the notebook's layers eager, and those
    compiled, without and with Adadelta's step (the fast CPU layers' own autograd functions and ``ByteDropout``'s
    byte view do not compile: AOTAutograd fails on their outputs). The compile times (the first steps') are printed
    first."""
    steps_by = {"eager, fast CPU layers": make_step(stage), "eager, torch's layers": make_step(stage, fast=False)}
    start = time.perf_counter()
    steps_by["torch.compile, torch's layers"] = make_step(stage, compiled=True, fast=False)
    steps_by["torch.compile, torch's layers"]()
    print(f"torch.compile: the first step took {time.perf_counter() - start:.1f} s (compiling)")
    start = time.perf_counter()
    whole = "torch.compile, torch's layers + Adadelta"
    steps_by[whole] = make_step(stage, compiled=True, fast=False, compiled_optimizer=True)
    steps_by[whole]()
    print(f"torch.compile with Adadelta's step: the first step took {time.perf_counter() - start:.1f} s")
    times: dict[str, list[float]] = {name: [] for name in steps_by}
    for _ in range(repeats):
        for name, step in steps_by.items():
            times[name].append(timed(step, steps)[0])
    print(f"stage {stage}, {torch.get_num_threads()} threads, batch {BATCH}: medians of {repeats} x {steps} steps")
    for name, t in times.items():
        print(f"{name:30s} {statistics.median(t) * 1e3:7.1f} ms wall per step  {[round(x * 1e3, 1) for x in t]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=["one", "two"], default="one")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--onednn", action="store_true", help="sum ONEDNN_VERBOSE=1's lines instead of torch.profiler")
    p.add_argument("--threads", type=int, help="torch's threads (default: torch's, one per core)")
    p.add_argument(
        "--compare_bf16",
        type=int,
        metavar="REPEATS",
        help="no profile: the step in 32-bit and in bf16-mixed, and torch.mm's peak in both, interleaved REPEATS times",
    )
    p.add_argument(
        "--compare_compiled",
        type=int,
        metavar="REPEATS",
        help="no profile: the eager step against torch.compile'd ones (forward; forward and Adadelta), REPEATS times",
    )
    p.add_argument("--verbose_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.onednn:
        cmd = [sys.executable, __file__, f"--stage={args.stage}", f"--steps={args.steps}", "--verbose_child"]
        cmd += [f"--threads={args.threads}"] if args.threads else []
        done = subprocess.run(cmd, env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True)
        onednn_summary(done.stdout, args.steps)
        return
    tune_cpu()
    if args.threads:
        torch.set_num_threads(args.threads)
    step = make_step(args.stage)
    if args.compare_bf16:
        compare_bf16(args.stage, args.steps, args.compare_bf16)
        return
    if args.compare_compiled:
        compare_compiled(args.stage, args.steps, args.compare_compiled)
        return
    if args.verbose_child:
        for _ in range(3):
            step()  # kernels chosen and weights reordered, outside the summary
        ctypes.CDLL(None).fflush(None)  # oneDNN prints through C stdio: its warm-up lines go out before the mark
        os.write(1, f"{MARK}\n".encode())
        for _ in range(args.steps):
            step()
        return
    wall, cpu = timed(step, args.steps)
    threads = torch.get_num_threads()
    print(f"stage {args.stage}, {threads} threads, batch {BATCH}, unprofiled, median of {args.steps} steps:")
    print(f"{wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU per step")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
