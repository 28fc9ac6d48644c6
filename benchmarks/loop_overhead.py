"""What one training step costs in Lightning's loop itself, with nothing to compute: the floor under any step.

    python benchmarks/loop_overhead.py --device cpu --steps 2000 --repeats 5

Each variant trains a one-parameter model on a two-element batch, so a step's time is the loop around it: the
plain PyTorch loop (zero_grad, forward, backward, step), Lightning's fit loop with automatic and with manual
optimization and nothing attached, and Lightning's loop as lit_transfer configures it (CSV logger, ``Timer``,
``StageReport``, a last checkpoint every 100 steps and a best one each epoch). The variants run in turns in one
process, several times; the median per variant is printed. Multiplied by a stage's 1,150-1,200 steps this bounds
from below what any implementation that runs one Lightning step per batch can reach, on the machine it runs on.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger

from lit_transfer.callbacks import StageReport

WARMUP = 100  # steps before timing starts: the first ones build caches and (on CUDA) initialise kernels


class Batches:
    """The same (inputs, labels) batch ``steps`` times: no data work at all."""

    def __init__(self, steps: int, device: torch.device) -> None:
        self.steps, self.x, self.y = steps, torch.ones(2, device=device), torch.zeros(2, device=device)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            yield self.x, self.y


class Tiny(L.LightningModule):
    def __init__(self, manual: bool) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.automatic_optimization = not manual

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = (self.w * batch[0]).sum()
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_acc", 0.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class StepClock(L.Callback):
    """Seconds per step between batch ``WARMUP`` and the last batch."""

    def __init__(self, steps: int, sync: Callable[[], None]) -> None:
        self.steps, self.sync, self.per_step = steps, sync, float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == WARMUP:
            self.sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, idx: int) -> None:
        if idx == self.steps - 1:
            self.sync()
            self.per_step = (time.perf_counter() - self.start) / (self.steps - 1 - WARMUP)


def plain(steps: int, device: torch.device, sync: Callable[[], None]) -> float:
    w = torch.nn.Parameter(torch.zeros(1, device=device))
    opt = torch.optim.SGD([w], lr=0.0)
    x = torch.ones(2, device=device)
    for i in range(steps):
        if i == WARMUP:
            sync()
            start = time.perf_counter()
        opt.zero_grad()
        (w * x).sum().backward()
        opt.step()
    sync()
    return (time.perf_counter() - start) / (steps - WARMUP)


def lightning(steps: int, device: torch.device, sync: Callable[[], None], manual: bool, ours: bool) -> float:
    clock = StepClock(steps, sync)
    root = tempfile.mkdtemp(prefix="loop_overhead_")
    extra: dict = dict(logger=False, enable_checkpointing=False, callbacks=[clock])
    if ours:  # what lit_transfer's CLI attaches (cli.py); its validation runs once, at the epoch's end
        extra = dict(
            logger=CSVLogger(root, name="", version=""),
            callbacks=[
                clock,
                Timer(),
                StageReport(),
                ModelCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=100),
                ModelCheckpoint(monitor="val_acc", mode="max"),
            ],
        )
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        **extra,
    )
    val = Batches(1, device) if ours else None
    trainer.fit(Tiny(manual), Batches(steps, device), val)
    return clock.per_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    variants: dict[str, Callable[[], float]] = {
        "plain PyTorch loop": lambda: plain(args.steps, device, sync),
        "Lightning, automatic optimization": lambda: lightning(args.steps, device, sync, manual=False, ours=False),
        "Lightning, manual optimization": lambda: lightning(args.steps, device, sync, manual=True, ours=False),
        "Lightning as lit_transfer configures it": lambda: lightning(args.steps, device, sync, manual=False, ours=True),
    }
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and logging does not apply here
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(fn())
    print(f"\nms per step on {device} ({args.steps - WARMUP} timed steps, median of {args.repeats} runs in turns)")
    print("| loop | ms per step (median) | all runs |")
    print("| --- | --- | --- |")
    for name, ts in times.items():
        runs = ", ".join(f"{1e3 * t:.3f}" for t in ts)
        print(f"| {name} | {1e3 * statistics.median(ts):.3f} | {runs} |")


if __name__ == "__main__":
    main()
