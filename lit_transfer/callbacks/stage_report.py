"""``StageReport``: per stage, the training time, images/s, test metrics per real class (digit or class folder)
and parameter counts, printed like the notebook and written to ``results.json``."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_only

from lit_transfer.callbacks.marker import loaded_marker
from lit_transfer.checkpoint import frozen_stage
from lit_transfer.errors import count
from lit_transfer.files import atomic_write, unused_path
from lit_transfer.model import count_params


def params_as_trained(trainer: L.Trainer, module: L.LightningModule) -> dict[str, int]:
    """The parameter counts, trainable and frozen as the checkpoint's stage had them when one was loaded (a
    test-only run of a stage-two checkpoint freezes nothing, but its backbone was frozen when it trained)."""
    counts, loaded = count_params(module), loaded_marker(trainer)
    if "frozen_params" in loaded and loaded["trainable_params"] + loaded["frozen_params"] == counts["total_params"]:
        counts.update(trainable_params=loaded["trainable_params"], frozen_params=loaded["frozen_params"])
    return counts


def stage_of(trainer: L.Trainer) -> str:
    """``finetune`` for a run that freezes layers, or that evaluates a checkpoint of such a run."""
    frozen = frozen_stage(trainer) if trainer.state.fn == "fit" else loaded_marker(trainer).get("frozen_stage")
    return "finetune" if frozen or (frozen is None and frozen_stage(trainer)) else "pretrain"


class StageReport(L.Callback):
    """Per stage: training time (from Lightning's ``Timer``), images/s, test metrics per real digit, params.

    Prints them like the notebook and writes ``results.json`` into the run directory (global rank 0 only).
    """

    def __init__(self) -> None:
        # Across resumes (this callback's checkpoint state): images trained on, and the validation accuracy per
        # epoch (a resumed run logs into a new folder, so its metrics.csv lacks the epochs before the resume).
        self.train_images = 0
        self.val_acc: dict[int, float] = {}
        self.fit: dict[str, Any] | None = None
        self.report: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_images": self.train_images, "val_acc": self.val_acc}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_images = state_dict["train_images"]
        self.val_acc = dict(state_dict.get("val_acc", {}))  # none in checkpoints written before it was kept

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_acc")
        if value is not None and not trainer.sanity_checking and trainer.state.fn == "fit":
            self.val_acc[trainer.current_epoch] = float(value)

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
        self.report = self.write(trainer, pl_module, summary, Path(trainer.log_dir or trainer.default_root_dir))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Printed here rather than in on_test_end, where the progress bar is still open and would be drawn again
        # below the report.
        if stage == "test" and self.report:
            print(self.report)
            self.report = None

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, summary: dict[str, Any], run_dir: Path) -> str:
        """Write results.json into ``run_dir``; returns the report to print."""
        datamodule = trainer.datamodule
        default = [str(i) for i in range(len(summary["per_class_acc"]))]
        names = list(getattr(datamodule, "class_names", default))
        folder = getattr(datamodule, "dataset", None) == "folder"
        per_class = dict(zip(names, summary["per_class_acc"], strict=True))
        checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        last = next((cb.last_model_path for cb in checkpoints if cb.last_model_path), None)
        best = next((cb.best_model_path for cb in checkpoints if cb.monitor and cb.best_model_path), None)
        fit = self.fit or {}
        results = {
            "stage": stage_of(trainer),
            "dataset": getattr(datamodule, "dataset", None),
            "data_dir": getattr(datamodule, "data_dir", None),
            "classes": names,  # label order: the rows and columns of "confusion"
            "digits": None if folder else list(getattr(datamodule, "digits", names)),
            "epochs": fit.get("epochs"),
            "train_time_s": fit.get("train_time_s"),
            "train_images": fit.get("train_images"),
            "val_acc_per_epoch": {str(epoch): acc for epoch, acc in self.val_acc.items()},  # epochs from 0
            "images_per_s": fit.get("images_per_s"),
            "peak_rss_mb": fit.get("peak_rss_mb"),
            "peak_gpu_mb": fit.get("peak_gpu_mb"),
            "test_loss": summary["test_loss"],
            "test_acc": summary["test_acc"],
            "test_images": summary["test_images"],
            "per_class_acc": per_class,
            **({} if folder else {"per_digit_acc": per_class}),  # the digit datasets' own name, read by the study
            "confusion": summary["confusion"],
            # the counts during training; a test-only run counts what it loaded
            **{k: fit.get(k, v) for k, v in params_as_trained(trainer, pl_module).items()},
            "checkpoint": last,
            "best_checkpoint": best,
            "device": str(trainer.strategy.root_device),
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        path = unused_path(run_dir / "results.json")  # a second test in the same run: keep both
        atomic_write(path, json.dumps(results, indent=2) + "\n")
        return format_report(results, path)


def format_report(r: dict[str, Any], path: Path) -> str:
    if r["digits"] is not None:
        lines = [f"\n== {r['stage']} on digits {''.join(map(str, r['digits']))} ({r['dataset']}) =="]
    else:
        lines = [f"\n== {r['stage']} on classes {', '.join(r['classes'])} (folder {r['data_dir']}) =="]
    if r["train_time_s"] is not None:
        lines.append(
            f"training: {count(r['epochs'], 'epoch')}, {r['train_time_s']:.1f} s, {r['images_per_s']:,.0f} images/s"
        )
    lines.append(f"test loss: {r['test_loss']:.4f}   test accuracy: {100 * r['test_acc']:.2f}%")
    kind = "per digit: " if r["digits"] is not None else "per class: "
    lines.append(kind + "  ".join(f"{d}: {100 * a:.2f}%" for d, a in r["per_class_acc"].items()))
    lines.append(
        f"parameters: {r['total_params']:,} total, {r['trainable_params']:,} trainable, "
        f"{r['frozen_params']:,} non-trainable"
    )
    lines.append(f"results: {path}")
    if r["checkpoint"] and r["stage"] == "finetune":
        lines.append(f"checkpoint: {r['checkpoint']}")
    elif r["checkpoint"]:
        lines.append(f"checkpoint for the next stage: {r['checkpoint']}")
        if r["digits"] is not None:
            config = "reverse_finetune" if set(r["digits"]) == {0, 1, 2, 3, 4} else "finetune"
            data = f" --data.data_dir {r['data_dir']}" if r["data_dir"] not in (None, "data/", "data") else ""
            lines.append(
                f"next: python -m lit_transfer fit --config configs/{config}.yaml{data} --ckpt_path {r['checkpoint']}"
            )
    return "\n".join(lines)
