"""``python -m lit_transfer {fit,validate,test,predict}``: LightningCLI with stage handoff and run directories."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer import console, evaluation
from lit_transfer.callbacks import FreezeFeatures, PredictionCSV, StageReport
from lit_transfer.callbacks.interrupt import Interrupt, Interrupted
from lit_transfer.callbacks.last_checkpoint import LastCheckpoint
from lit_transfer.callbacks.progress import ProgressBar as RunningLossBar
from lit_transfer.checkpoint import AtomicCheckpointIO, frozen_stage, load_checkpoint, require_ours
from lit_transfer.data import DigitsDataModule
from lit_transfer.errors import UserError
from lit_transfer.module import TransferModule
from lit_transfer.run_dirs import claim_run_dir, loggers_into, release_unused_run_dir
from lit_transfer.speed.cpu import bf16_note, flush_denormals, tune_cpu

DESCRIPTION = (
    "lit_transfer: pretrain a small CNN on some MNIST digits, freeze its convolutional features, retrain the head "
    "on others (stage one: fit --config configs/pretrain.yaml; stage two: fit --config configs/finetune.yaml "
    "--ckpt_path <stage one's checkpoint>)."
)
FREEZE_OPTIONS = ("depth", "unfreeze_at_epoch", "backbone_lr_factor")


class TransferCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # State the classes once: the head's width follows the digits.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        # FreezeFeatures' options whatever else is in --trainer.callbacks (--trainer.callbacks.<option> applies
        # to the last callback in the list only): set on the FreezeFeatures there, or one is added.
        docs = {
            "depth": "FreezeFeatures: weight layers to freeze, from the input (1-3; 2 is the backbone).",
            "unfreeze_at_epoch": "FreezeFeatures: epoch at which the frozen layers join training (gradual unfreezing).",
            "backbone_lr_factor": "FreezeFeatures: learning rate of the unfrozen layers relative to the head's.",
        }
        types = {"depth": int | None, "unfreeze_at_epoch": int | None, "backbone_lr_factor": float | None}
        for name in FREEZE_OPTIONS:
            note = " Works whatever else is in --trainer.callbacks; on its own, turns freezing on."
            parser.add_argument(f"--freeze.{name}", type=types[name], default=None, help=docs[name] + note)
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.given = [str(a) for a in (sys.argv[1:] if args is None else args)]  # what the user typed
        super().parse_arguments(parser, with_save_dir(self.given) if args is not None or len(sys.argv) > 1 else args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        for key, option in (("optimizer", "--model.optimizer"), ("lr_scheduler", "--model.lr_scheduler")):
            if config.get(key) is not None:
                raise UserError(
                    f"--{key} would replace the module's configure_optimizers (which gives the optimizer only the "
                    f"trainable parameters, so a frozen backbone stays frozen): use {option} instead"
                )
        self._merge_freeze_options(config)
        # The run folder: <default_root_dir>/version_<n> for training, <default_root_dir>/<subcommand>/version_<n>
        # for an evaluation, so that evaluations never mix with training versions.
        root = Path(config.trainer.get("default_root_dir") or "runs")
        self.run_dir = claim_run_dir(root if self.subcommand == "fit" else root / self.subcommand)
        config.trainer.logger = loggers_into(config.trainer.get("logger"), self.run_dir)

    def _merge_freeze_options(self, config: Namespace) -> None:
        values = {name: config.freeze[name] for name in FREEZE_OPTIONS if config.freeze[name] is not None}
        if not values:
            return
        callbacks = config.trainer.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        ours = [c for c in callbacks if c.class_path.rpartition(".")[2] == FreezeFeatures.__name__]
        if not ours:  # --freeze.* on its own turns freezing on
            ours = [Namespace(class_path="lit_transfer.FreezeFeatures", init_args=Namespace())]
            callbacks.append(ours[0])
        for name, value in values.items():
            ours[0].init_args[name] = value
        config.trainer.callbacks = callbacks

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        run_dir = self.run_dir
        kwargs.setdefault("default_root_dir", str(run_dir))
        if config.get("logger") in (None, True):
            # Logs, config.yaml, checkpoints/ and results.json all in one run directory: the CSV log, and the same
            # scalars for TensorBoard (tensorboard --logdir runs).
            csv, tensorboard = CSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="", version="")
            kwargs.setdefault("logger", [csv, tensorboard])
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
        user = [cb for cb in (config.get("callbacks") or []) if isinstance(cb, ProgressBar)]
        if user or config.get("enable_progress_bar") is False:  # the user's bar (e.g. RichProgressBar), or none
            defaults = self.trainer_defaults
            defaults["callbacks"] = [cb for cb in defaults["callbacks"] if not isinstance(cb, RunningLossBar)]
        return super()._instantiate_trainer(config, callbacks)

    # --- fit: resume the same stage, or transfer from another -------------------------------------------
    def before_fit(self) -> None:
        self.datamodule.prepare_data()  # missing data fails here, before worker processes start
        ckpt_path = self.config_init["fit"].get("ckpt_path")
        evaluation.refuse_shorthand(ckpt_path)
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
        if note := bf16_note(self.trainer):
            rank_zero_info(f"lit_transfer: note: {note}")

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
        self._prepare_evaluation("test")

    def before_validate(self) -> None:
        self._prepare_evaluation("validate")

    def before_predict(self) -> None:
        self._prepare_evaluation("predict")

    def _prepare_evaluation(self, subcommand: str) -> None:
        given = {a.split("=")[0].removeprefix("--data.") for a in self.given if a.startswith("--data.")}
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        self.model = evaluation.prepare(subcommand, ckpt_path, self.model, self.datamodule, given)


def with_save_dir(args: list[str]) -> list[str]:
    """``--trainer.logger TensorBoardLogger`` (or CSVLogger) with a ``save_dir`` added where none is given: the two
    require one to parse, and every logger's folder becomes the run folder anyway (run_dirs.loggers_into)."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        key, _, value = arg.partition("=")
        if key in ("--trainer.logger", "--trainer.logger+") and not value and i + 1 < len(args):
            continue  # the value is the next argument: handled there
        if key not in ("--trainer.logger", "--trainer.logger+"):
            if i == 0 or args[i - 1] not in ("--trainer.logger", "--trainer.logger+"):
                continue
            value = arg
        named = any(a.startswith("--trainer.logger.save_dir") for a in args[i + 1 : i + 3])
        if value.rpartition(".")[2] in ("TensorBoardLogger", "CSVLogger") and not named:
            out.append("--trainer.logger.save_dir=runs")
    return out


def trainer_defaults(args: list[str] | None) -> dict[str, Any]:
    return {
        "max_epochs": 5,  # per stage, as in the notebook
        "callbacks": [Timer(), StageReport(), PredictionCSV(), RunningLossBar(), Interrupt(args)],
    }


def main(args: list[str] | None = None) -> None:
    flush_denormals()  # before any parallel torch work starts the threads that would not inherit it
    console.quiet()
    try:
        TransferCLI(
            TransferModule,
            DigitsDataModule,
            trainer_defaults=trainer_defaults(args),
            seed_everything_default=0,
            parser_kwargs={"prog": "python -m lit_transfer", "description": DESCRIPTION},
            args=args,
        )
    except Interrupted as err:
        sys.stderr.write(f"lit_transfer: {err}\n")
        sys.exit(err.exit_code)
    except UserError as err:
        release_unused_run_dir()  # claimed, but the run stopped before writing anything
        sys.exit(f"lit_transfer: error: {err}")
