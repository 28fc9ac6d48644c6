"""Stage two's optimizer step on the CPU: Adadelta (Keras values) over the head's 590,597 parameters, torch's
implementations interleaved, so that machine noise hits all alike.

    python benchmarks/optimizer_step.py [--steps 50] [--repeats 7] [--compiled] [--threads 1] [--chunk 65536]

- ``for-loop``: torch's default on the CPU (``foreach=None`` picks the per-tensor loop there), ~8 elementwise
  passes over each parameter (fc1's weight is 2.4 MB, beyond one core's L2).
- ``foreach``: ``foreach=True``, the same passes over all tensors at once (fewer Python and dispatcher calls).
- ``chunked``: torch's own single-tensor Adadelta (``torch.optim.adadelta.adadelta``) over slices of ``--chunk``
  elements of each tensor, so that all passes over one slice run while it is in the core's cache; the same
  arithmetic per element, so the same parameters to the bit.
- ``compiled`` (``--compiled``): ``torch.compile`` of ``step``, the passes fused into one loop by inductor's C++
  code; costs a compile at the start (printed).
Every variant starts from the same gradients and state and must end with the same parameters (checked).
Prints the median wall and CPU milliseconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_transfer.model import Head
from lit_transfer.speed.cpu import tune_cpu


def make(foreach: bool | None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    head = Head(5)
    for p in head.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return head, torch.optim.Adadelta(head.parameters(), lr=1.0, rho=0.95, eps=1e-7, foreach=foreach)


def chunked(optimizer: torch.optim.Adadelta, chunk: int):
    """A step of ``optimizer`` as torch's single-tensor Adadelta over slices of ``chunk`` elements."""
    from torch.optim.adadelta import adadelta

    group = optimizer.param_groups[0]
    for p in group["params"]:
        state = optimizer.state[p]
        state["step"] = torch.tensor(0.0)
        state["square_avg"], state["acc_delta"] = torch.zeros_like(p), torch.zeros_like(p)
    slices: list[list[torch.Tensor]] = [[], [], [], []]  # params, grads, square_avgs, acc_deltas
    for p in group["params"]:
        state = optimizer.state[p]
        for i, t in enumerate((p.data, p.grad, state["square_avg"], state["acc_delta"])):
            slices[i] += list(t.view(-1).split(chunk))
    steps = [torch.tensor(0.0) for _ in slices[0]]  # Adadelta's update does not depend on the step count

    def step() -> None:
        with torch.no_grad():
            adadelta(
                *slices,
                steps,
                lr=group["lr"],
                rho=group["rho"],
                eps=group["eps"],
                weight_decay=0.0,
                foreach=False,
                maximize=False,
                differentiable=False,
                capturable=False,
                has_complex=False,
            )

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--compiled", action="store_true")
    p.add_argument("--threads", type=int, help="torch's threads (default: torch's, one per core)")
    p.add_argument("--chunk", type=int, default=65536, help="elements per slice of the chunked variant")
    args = p.parse_args()
    tune_cpu()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {"for-loop (default)": make(None), "foreach=True": make(True)}
    head, opt = make(None)
    variants[f"chunked ({args.chunk:,} elements)"] = (head, opt, chunked(opt, args.chunk))
    if args.compiled:
        head, opt = make(None)
        start = time.perf_counter()
        step = torch.compile(opt.step)
        step()
        print(f"compiled in {time.perf_counter() - start:.1f} s (first step included)")
        variants["torch.compile(step)"] = (head, opt, step)
    steps = {name: v[2] if len(v) == 3 else v[1].step for name, v in variants.items()}
    if args.compiled:  # the compiled one has taken a step: the others take one too, so all stay in step
        for name, step in steps.items():
            if name != "torch.compile(step)":
                step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, step in steps.items():
            w, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            if repeat:
                wall[name].append((time.perf_counter() - w) / args.steps * 1e3)
                cpu[name].append((time.process_time() - c) / args.steps * 1e3)
    reference = next(iter(variants.values()))[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} x {args.steps}")
    for name, v in variants.items():
        same = all(torch.equal(a, b) for a, b in zip(reference.parameters(), v[0].parameters(), strict=True))
        exact = "bit-identical" if same else "DIFFERENT parameters"
        ms_wall, ms_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{ms_wall:6.2f} ms wall {ms_cpu:6.2f} ms CPU  {name}  {exact}")


if __name__ == "__main__":
    main()
