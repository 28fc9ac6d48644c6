"""``python -m lit_transfer {fit,validate,test,predict}``: LightningCLI with stage handoff and run directories."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.callbacks import PredictionCSV, StageReport
from lit_transfer.callbacks.last_checkpoint import LastCheckpoint
from lit_transfer.checkpoint import AtomicCheckpointIO, frozen_stage, load_checkpoint, require_ours
from lit_transfer.data import DigitsDataModule
from lit_transfer.errors import UserError
from lit_transfer.module import TransferModule
from lit_transfer.speed.cpu import flush_denormals, tune_cpu

RUN_DIR_ENV = "LIT_TRANSFER_RUN_DIR"  # how DDP worker processes learn the run directory rank 0 claimed


def claim_run_dir(root: str | os.PathLike) -> Path:
    """Create ``<root>/version_<n>`` for the next free ``n``; ``mkdir`` is atomic, so two runs never share one.

    Lightning's loggers pick the next version by listing the folder, which races when two runs start together.
    Worker processes that Lightning's DDP launcher starts inherit the launching process's choice.
    """
    if "LOCAL_RANK" in os.environ and RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{n}").mkdir()
            break
        except FileExistsError:
            n += 1
    os.environ[RUN_DIR_ENV] = str(root / f"version_{n}")
    return root / f"version_{n}"


class TransferCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # State the classes once: the head's width follows the digits.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        # Two checkpoint callbacks, each configurable (--last_checkpoint.every_n_train_steps 50, ...):
        # last.ckpt, rewritten often so that a crash costs little, and the best model by validation accuracy.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.save_last": True,
                "last_checkpoint.save_top_k": 0,
                "last_checkpoint.every_n_train_steps": 100,  # stage one has ~210 steps per epoch at batch 128
            }
        )
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.set_defaults(
            {
                "best_checkpoint.monitor": "val_acc",
                "best_checkpoint.mode": "max",
                "best_checkpoint.filename": "best-{epoch}-{val_acc:.4f}",
            }
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI >= 2.5.5 replaces the config's model settings with the hyperparameters stored in the
        # ``--ckpt_path`` checkpoint. Stage two's checkpoint comes from stage one, whose settings must not win.
        return

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        run_dir = claim_run_dir(config.get("default_root_dir") or "runs")
        kwargs.setdefault("default_root_dir", str(run_dir))
        if config.get("logger") in (None, True):
            # Logs, config.yaml, checkpoints/ and results.json all in one run directory.
            kwargs.setdefault("logger", CSVLogger(save_dir=run_dir, name="", version=""))
        if not config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        if config.get("max_time") is not None:
            # Lightning enforces --trainer.max_time with a Timer of its own only if the callbacks hold none, so the
            # default Timer (there for the training time) would switch the limit off; Lightning's does both.
            callbacks = self.trainer_defaults["callbacks"]
            self.trainer_defaults["callbacks"] = [cb for cb in callbacks if not isinstance(cb, Timer)]
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.strategy.root_device.type == "cpu":
            tune_cpu(processes=trainer.num_devices)  # process-wide CPU settings (lit_transfer/speed/cpu.py)
        return trainer

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[L.Callback]) -> L.Trainer:
        # LightningCLI's private hook (like _parse_ckpt_path): tests/test_pipeline.py notices if it goes away.
        if config.get("enable_checkpointing") is False:
            # The two checkpoint callbacks are always built from their own options; Lightning refuses a
            # ModelCheckpoint with checkpointing off, where the flag should simply turn them off.
            callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    # --- fit: resume the same stage, or transfer from another -------------------------------------------
    def before_fit(self) -> None:
        self.datamodule.prepare_data()  # missing data fails here, before worker processes start
        ckpt_path = self.config_init["fit"].get("ckpt_path")
        _refuse_shorthand(ckpt_path)
        if ckpt_path:
            if self._same_stage(ckpt_path):
                rank_zero_info(f"lit_transfer: resuming this stage from {ckpt_path}")
            else:
                # Another stage's checkpoint: start this stage from its weights, with a fresh optimizer,
                # epoch 0 and this config's settings (plain Lightning would resume the old run instead).
                rank_zero_info(f"lit_transfer: starting this stage from the weights in {ckpt_path}")
                self.model.init_from = self.model.hparams.init_from = str(ckpt_path)
                self.config_init["fit"]["ckpt_path"] = None
        elif frozen_stage(self.trainer) and not self.model.init_from:
            # Legitimate (the study's random-feature control), but from the Quick start it means a forgotten
            # checkpoint, and the head would train on untrained features without a word.
            rank_zero_info(
                "lit_transfer: warning: FreezeFeatures freezes layers but no weights were given (--ckpt_path or "
                "--model.init_from): they keep their random initialisation and the head trains on random features"
            )
        self._refuse_overwrite(ckpt_path)

    def _same_stage(self, ckpt_path: str) -> bool:
        meta = require_ours(load_checkpoint(ckpt_path), ckpt_path)
        here = (self.datamodule.dataset, list(self.datamodule.digits), frozen_stage(self.trainer))
        return (meta.get("dataset"), list(meta.get("digits", [])), meta.get("frozen_stage")) == here

    def _refuse_overwrite(self, ckpt_path: str | None) -> None:
        for cb in self.trainer.callbacks:
            if not isinstance(cb, ModelCheckpoint) or cb.dirpath is None:
                continue  # no dirpath: checkpoints go into this run's fresh directory
            existing = sorted(Path(cb.dirpath).glob("*.ckpt"))
            resuming_here = ckpt_path and Path(ckpt_path).resolve().parent == Path(cb.dirpath).resolve()
            if existing and not resuming_here:
                raise UserError(
                    f"checkpoint folder {cb.dirpath} already holds {existing[0].name} from another run: "
                    "choose an empty dirpath, or leave dirpath unset so each run gets its own folder"
                )

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        # The notebook evaluates the final weights on the stage's test digits right after training.
        self.trainer.test(self.model, datamodule=self.datamodule)

    def before_test(self) -> None:
        self._check_eval_checkpoint("test")

    def before_validate(self) -> None:
        self._check_eval_checkpoint("validate")

    def before_predict(self) -> None:
        self._check_eval_checkpoint("predict")

    def _check_eval_checkpoint(self, subcommand: str) -> None:
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        _refuse_shorthand(ckpt_path)
        if ckpt_path is None:
            rank_zero_info(f"lit_transfer: warning: no --ckpt_path: {subcommand} uses randomly initialised weights")
        if ckpt_path in (None, "hpc", "registry"):
            return
        state = load_checkpoint(ckpt_path)
        require_ours(state, ckpt_path)
        expected = {k: v.shape for k, v in self.model.state_dict().items()}
        found = {k: v.shape for k, v in state["state_dict"].items()}
        if found != expected:
            raise UserError(
                f"{ckpt_path} does not fit the configured model (e.g. a head for another number of digits): "
                "pass the --config of the stage that wrote it"
            )


def _refuse_shorthand(ckpt_path: str | None) -> None:
    # Lightning's "last" and "best" look in this process's run folder, which is new for every command here.
    if ckpt_path in ("last", "best"):
        raise UserError(
            f"--ckpt_path {ckpt_path} would look in this command's own new run folder: pass the checkpoint's path, "
            "e.g. runs/pretrain/version_0/checkpoints/last.ckpt (each stage prints it)"
        )


def trainer_defaults() -> dict[str, Any]:
    return {
        "max_epochs": 5,  # per stage, as in the notebook
        "callbacks": [Timer(), StageReport(), PredictionCSV()],
    }


def main(args: list[str] | None = None) -> None:
    flush_denormals()  # before any parallel torch work starts the threads that would not inherit it
    try:
        TransferCLI(
            TransferModule,
            DigitsDataModule,
            trainer_defaults=trainer_defaults(),
            seed_everything_default=0,
            args=args,
        )
    except UserError as err:
        run_dir = os.environ.pop(RUN_DIR_ENV, None)
        if run_dir and Path(run_dir).is_dir() and not any(Path(run_dir).iterdir()):
            Path(run_dir).rmdir()  # claimed, but the run stopped before writing anything
        sys.exit(f"lit_transfer: error: {err}")
