"""Callbacks: ``FreezeFeatures`` (stage two's frozen backbone) and ``StageReport`` (the per-stage results)."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.optim import Optimizer

from lit_transfer.files import atomic_write, unused_path
from lit_transfer.model import weight_layers


class FreezeFeatures(BaseFinetuning):
    """Freeze the backbone (the first ``depth`` weight layers) before training; optionally unfreeze it later.

    Frozen means ``requires_grad=False`` only: dropout in the frozen layers stays active while training, as in
    Keras. ``depth`` counts weight layers from the input: 1 = conv1, 2 = both convs (the backbone, the notebook),
    3 = both convs and the first dense layer (Yosinski et al.'s n).
    """

    def __init__(self, depth: int = 2, unfreeze_at_epoch: int | None = None, backbone_lr_factor: float = 0.1) -> None:
        """
        Args:
            depth: How many weight layers, from the input, to freeze (1-3; 2 is the whole backbone).
            unfreeze_at_epoch: Epoch at which the frozen layers join training (gradual unfreezing, as in
                Lightning's fine-tuning example); ``None`` keeps them frozen throughout.
            backbone_lr_factor: Learning rate of the unfrozen layers relative to the head's.
        """
        super().__init__()
        if not 1 <= depth <= 3:
            raise ValueError(f"FreezeFeatures depth must be 1, 2 or 3 (weight layers from the input), got {depth}")
        if backbone_lr_factor <= 0:
            raise ValueError(f"backbone_lr_factor must be positive, got {backbone_lr_factor}")
        self.depth, self.unfreeze_at_epoch, self.backbone_lr_factor = depth, unfreeze_at_epoch, backbone_lr_factor

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # BaseFinetuning freezes on every setup; the test that follows fit must see the layers as training left
        # them (unfrozen after ``unfreeze_at_epoch``), so freeze for fitting only.
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def frozen_layers(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return weight_layers(pl_module.backbone, pl_module.head)[: self.depth]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.frozen_layers(pl_module), train_bn=False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch == self.unfreeze_at_epoch:
            self.unfreeze_and_add_param_group(
                self.frozen_layers(pl_module), optimizer, initial_denom_lr=1 / self.backbone_lr_factor, train_bn=True
            )


def frozen_stage(trainer: L.Trainer) -> bool:
    """Whether this run freezes layers: what tells a stage-two checkpoint from a stage-one one."""
    return any(isinstance(cb, FreezeFeatures) for cb in trainer.callbacks)


def count_params(module: L.LightningModule) -> dict[str, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"total_params": trainable + frozen, "trainable_params": trainable, "frozen_params": frozen}


class StageReport(L.Callback):
    """Per stage: training time (from Lightning's ``Timer``), images/s, test metrics per real digit, params.

    Prints them like the notebook and writes ``results.json`` into the run directory (global rank 0 only).
    """

    def __init__(self) -> None:
        self.train_images = 0  # images trained on, across resumes (part of this callback's checkpoint state)
        self.fit: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_images": self.train_images}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_images = state_dict["train_images"]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx) -> None:
        self.train_images += batch[1].shape[0] * trainer.world_size  # a shape: no device sync

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        seconds = timer.time_elapsed("train") if timer else None
        self.fit = {
            "epochs": trainer.current_epoch,
            "train_time_s": seconds,
            "train_images": self.train_images,
            "images_per_s": self.train_images / seconds if seconds else None,
            **count_params(pl_module),
            # peak memory of this process so far (Linux reports KiB) and, on CUDA, of the device
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if pl_module.device.type == "cuda" else None,
        }

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = getattr(pl_module, "test_summary", None)
        if summary is None or trainer.sanity_checking:
            return
        # ``trainer.log_dir`` broadcasts from rank 0 under DDP, so every rank must ask for it.
        self.write(trainer, pl_module, summary, Path(trainer.log_dir or trainer.default_root_dir))

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, summary: dict[str, Any], run_dir: Path) -> None:
        datamodule = trainer.datamodule
        digits = list(getattr(datamodule, "digits", range(len(summary["per_class_acc"]))))
        checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        last = next((cb.last_model_path for cb in checkpoints if cb.last_model_path), None)
        best = next((cb.best_model_path for cb in checkpoints if cb.monitor and cb.best_model_path), None)
        fit = self.fit or {}
        results = {
            "stage": "finetune" if frozen_stage(trainer) else "pretrain",
            "dataset": getattr(datamodule, "dataset", None),
            "data_dir": getattr(datamodule, "data_dir", None),
            "digits": digits,
            "epochs": fit.get("epochs"),
            "train_time_s": fit.get("train_time_s"),
            "train_images": fit.get("train_images"),
            "images_per_s": fit.get("images_per_s"),
            "peak_rss_mb": fit.get("peak_rss_mb"),
            "peak_gpu_mb": fit.get("peak_gpu_mb"),
            "test_loss": summary["test_loss"],
            "test_acc": summary["test_acc"],
            "test_images": summary["test_images"],
            "per_digit_acc": {str(d): a for d, a in zip(digits, summary["per_class_acc"], strict=True)},
            "confusion": summary["confusion"],
            # the counts during training; a test-only run counts what it loaded
            **{k: fit.get(k, v) for k, v in count_params(pl_module).items()},
            "checkpoint": last,
            "best_checkpoint": best,
            "device": str(trainer.strategy.root_device),
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        path = unused_path(run_dir / "results.json")  # a second test in the same run: keep both
        atomic_write(path, json.dumps(results, indent=2) + "\n")
        print(format_report(results, path))


def format_report(r: dict[str, Any], path: Path) -> str:
    digits = "".join(str(d) for d in r["digits"])
    lines = [f"\n== {r['stage']} on digits {digits} ({r['dataset']}) =="]
    if r["train_time_s"] is not None:
        lines.append(f"training: {r['epochs']} epochs, {r['train_time_s']:.1f} s, {r['images_per_s']:,.0f} images/s")
    lines.append(f"test loss: {r['test_loss']:.4f}   test accuracy: {100 * r['test_acc']:.2f}%")
    lines.append("per digit: " + "  ".join(f"{d}: {100 * a:.2f}%" for d, a in r["per_digit_acc"].items()))
    lines.append(
        f"parameters: {r['total_params']:,} total, {r['trainable_params']:,} trainable, "
        f"{r['frozen_params']:,} non-trainable"
    )
    lines.append(f"results: {path}")
    if r["checkpoint"]:
        lines.append(f"checkpoint for the next stage: {r['checkpoint']}")
        if r["stage"] == "pretrain":
            config = "reverse_finetune" if set(r["digits"]) == {0, 1, 2, 3, 4} else "finetune"
            data = f" --data.data_dir {r['data_dir']}" if r["data_dir"] not in (None, "data/", "data") else ""
            lines.append(
                f"next: python -m lit_transfer fit --config configs/{config}.yaml{data} --ckpt_path {r['checkpoint']}"
            )
    return "\n".join(lines)
