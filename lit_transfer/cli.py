"""``python -m lit_transfer fit|validate|test|predict``: LightningCLI, wired for the two stages.

The wiring only: the head's width linked to the data's classes, the two checkpoint callbacks, the ``--freeze.*``
and ``--speed.*`` options, the stage handoff (``fit --ckpt_path`` resumes the same stage or transfers into the next)
and the test after ``fit``. The run's other callbacks: ``callbacks.run_callbacks``; run folders, loggers, which
classes an evaluation uses and the rest of the command line's helpers: ``command_line/``; the notebook itself:
``module.py``, ``model.py``, ``data/``, ``freeze.py``.
"""

from __future__ import annotations

import shlex
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.callbacks import run_callbacks
from lit_transfer.callbacks.interrupt import Interrupted
from lit_transfer.callbacks.last_checkpoint import LastCheckpoint
from lit_transfer.callbacks.progress import ProgressBar as RunningLossBar
from lit_transfer.checkpoint import AtomicCheckpointIO, frozen_stage, same_stage
from lit_transfer.command_line import console, evaluation, help, options, parse_errors, run_dirs
from lit_transfer.command_line.precision import bf16_note
from lit_transfer.data import ImagesDataModule
from lit_transfer.errors import UserError
from lit_transfer.module import TransferModule
from lit_transfer.speed.cpu import flush_denormals, tune_cpu

DESCRIPTION = (
    "lit_transfer: pretrain a small CNN on some MNIST digits, freeze its convolutional features, retrain the head "
    "on others (stage one: fit --config configs/pretrain.yaml; stage two: fit --config configs/finetune.yaml, which "
    "starts from runs/pretrain/latest)."
)


class TransferCLI(LightningCLI):
    """LightningCLI for the two stages: each ``fit`` gets its own run folder, ``fit --ckpt_path`` of another
    stage's checkpoint transfers its weights (a fresh optimizer and epoch 0) instead of resuming, and every
    ``fit`` ends by testing its final weights, as the notebook does."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"data": {"class_path": "lit_transfer.DigitsDataModule"}})  # --data FolderDataModule
        # State the classes once: the head's width follows the data's classes.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        options.add_freeze_arguments(parser)  # --freeze.*: FreezeFeatures' options, whatever the callbacks
        options.add_speed_arguments(parser.add_argument_group("Speed (--speed.*): the same results, less work"))
        # Two checkpoint callbacks, each configurable (--last_checkpoint.every_n_train_steps 50, ...): last.ckpt,
        # rewritten often so that a crash costs little, and the best model by validation accuracy.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.save_last": True,
                "last_checkpoint.save_top_k": 0,
                "last_checkpoint.every_n_train_steps": 100,  # stage one has ~210 steps per epoch at batch 128
                "best_checkpoint.monitor": "val_acc",
                "best_checkpoint.mode": "max",
                "best_checkpoint.filename": "best-{epoch}-{val_acc:.4f}",
            }
        )

    def _parse_ckpt_path(self) -> None:
        # Private hook, overridden because nothing public does it: LightningCLI >= 2.5.5 replaces the config's model
        # settings with the hyperparameters stored in the --ckpt_path checkpoint, and stage two's checkpoint comes
        # from stage one, whose settings must not win. tests/test_pipeline.py::test_handoff_* fails without it.
        return

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # LightningCLI's own, on the completed arguments (its version would warn that both args and sys.argv were
        # given, on every run from the command line).
        self.given = [str(a) for a in (sys.argv[1:] if args is None else args)]  # what the user typed
        try:
            self.config = parser.parse_args(run_dirs.with_save_dir(self.given))
        except ArgumentError as err:
            sub = parser._subcommands_action._name_parser_map.get(self.given[0]) if self.given else None
            known = list(sub._option_string_actions) if sub is not None else []
            raise UserError(parse_errors.explain(str(err), self.given, known)) from None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        options.refuse_top_level_optimizer(config)
        options.merge_freeze_options(config)
        given = {a.split("=")[0] for a in self.given if a.startswith("--")}
        if self.subcommand == "fit" and config.model.get("init_from") and "--ckpt_path" not in given:
            config.ckpt_path = None  # the config's stage one (runs/pretrain/latest/...) yields to --model.init_from
        if self.subcommand != "fit" and config.get("ckpt_path") and "--ckpt_path" not in given:
            # A stage-two config's ckpt_path is where its fit starts (stage one). To test, validate or predict with
            # that config is to evaluate the stage itself: its own newest finished run.
            stage = Path(config.trainer.get("default_root_dir") or "runs")
            config.ckpt_path = str(stage / run_dirs.LATEST / "checkpoints" / "last.ckpt")
        # runs/pretrain/latest/... -> runs/pretrain/version_<n>/...: the run records the checkpoint it started from
        config.ckpt_path = run_dirs.follow_latest(config.get("ckpt_path"), self._data_options(config))
        root = Path(config.trainer.get("default_root_dir") or "runs")
        if self.subcommand != "fit":  # an evaluation: the checkpoint's classes, beside the checkpoint's own runs
            evaluation.configure(self.subcommand, config, {g.removeprefix("--data.") for g in given})
            if "--trainer.default_root_dir" not in given:
                root = evaluation.run_root(config.get("ckpt_path")) or root
        # <default_root_dir>/version_<n> for training, <default_root_dir>/<subcommand>/version_<n> for an evaluation
        self.run_dir = run_dirs.claim_run_dir(root if self.subcommand == "fit" else root / self.subcommand)
        config.trainer.logger = run_dirs.loggers_into(config.trainer.get("logger"), self.run_dir)

    def instantiate_classes(self) -> None:
        # Under subclass mode jsonargparse reports a DataModule's own one-line error as "does not validate against
        # any of the Union subtypes ...": the UserError it wraps is what the user needs.
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        kwargs.setdefault("default_root_dir", str(self.run_dir))
        if config.get("logger") in (None, True):  # logs, config, checkpoints and results in one run folder
            kwargs.setdefault("logger", run_dirs.default_loggers(self.run_dir))
        if not config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        speed = self._get(self.config_init, "speed")
        callbacks = run_callbacks(feature_cache=speed.feature_cache, command_line=self.given)
        if config.get("max_time") is not None:
            # Lightning enforces --trainer.max_time with a Timer of its own only if the callbacks hold none, so the
            # default Timer (there for the training time) would switch the limit off; Lightning's does both.
            callbacks = [cb for cb in callbacks if not isinstance(cb, Timer)]
        self.trainer_defaults["callbacks"] = callbacks  # LightningCLI puts the config's own (FreezeFeatures) first
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.strategy.root_device.type == "cpu":
            tune_cpu(processes=trainer.num_devices)  # process-wide CPU settings (lit_transfer/speed/cpu.py)
        return trainer

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[L.Callback]) -> L.Trainer:
        # Private hook, overridden because it is the one place that sees both the trainer flags and the extra
        # callbacks (tests/test_pipeline.py::test_checkpointing_off_* and test_lightning_conventions' progress bar
        # test fail if Lightning stops calling it). With --trainer.enable_checkpointing false the two checkpoint
        # callbacks go (Lightning would refuse them); the user's own progress bar, or none, replaces ours.
        if config.get("enable_checkpointing") is False:
            callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
        user = [cb for cb in (config.get("callbacks") or []) if isinstance(cb, ProgressBar)]
        if user or config.get("enable_progress_bar") is False:
            defaults = self.trainer_defaults
            defaults["callbacks"] = [cb for cb in defaults["callbacks"] if not isinstance(cb, RunningLossBar)]
        return super()._instantiate_trainer(config, callbacks)

    # --- fit: resume the same stage, or transfer from another -------------------------------------------
    def before_fit(self) -> None:
        self.datamodule.prepare_data()  # missing data fails here, before worker processes start
        ckpt_path = self.config_init["fit"].get("ckpt_path")
        evaluation.refuse_shorthand(ckpt_path)
        if ckpt_path and same_stage(ckpt_path, self.datamodule, self.trainer):
            rank_zero_info(f"lit_transfer: resuming this stage from {ckpt_path}")
        elif ckpt_path:
            # Another stage's checkpoint: start this stage from its weights, with a fresh optimizer, epoch 0 and
            # this config's settings (plain Lightning would resume the old run instead).
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
        run_dirs.refuse_overwrite(self.trainer, ckpt_path)
        if self.trainer.is_global_zero and (note := bf16_note(self.trainer)):  # one probe, not one per process
            rank_zero_info(f"lit_transfer: note: {note}")

    def after_fit(self) -> None:
        if not self.trainer.interrupted:  # the notebook tests the final weights right after training
            self.trainer.test(self.model, datamodule=self.datamodule)
            if self.trainer.is_global_zero:  # a finished stage: runs/<stage>/latest, what stage two's config names
                run_dirs.point_latest(self.run_dir)

    def _data_options(self, config: Namespace) -> str:
        """The data options of this command line that stage one's command needs too (not an image folder's)."""
        if config.data.class_path.endswith("FolderDataModule"):
            return ""
        words = []
        for i, arg in enumerate(self.given):
            key, equals, value = arg.partition("=")
            if key in ("--data.data_dir", "--data.download", "--data.dataset") and (equals or i + 1 < len(self.given)):
                words += [key, shlex.quote(value if equals else self.given[i + 1])]
        return "".join(f" {word}" for word in words)

    def before_test(self) -> None:
        self._prepare_evaluation("test")

    def before_validate(self) -> None:
        self._prepare_evaluation("validate")

    def before_predict(self) -> None:
        self._prepare_evaluation("predict")

    def _prepare_evaluation(self, subcommand: str) -> None:
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        self.model = evaluation.prepare(subcommand, ckpt_path, self.model, self.datamodule)


def main(args: list[str] | None = None) -> None:
    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    if not argv or argv[0] in ("-h", "--help"):  # every command, the tools and the study included
        print(help.top_level())
        sys.exit(0 if argv else 2)
    if argv[0] in help.COMMANDS and {"-h", "--help"} & set(argv):  # the project's own options first
        print(help.short(argv[0]))
        return
    args = ["--help" if a == "--help-all" else a for a in argv]  # LightningCLI's whole help
    flush_denormals()  # before any parallel torch work starts the threads that would not inherit it
    console.quiet()
    try:
        TransferCLI(
            TransferModule,
            ImagesDataModule,
            subclass_mode_data=True,
            trainer_defaults={"max_epochs": 5},  # per stage, as in the notebook; callbacks: instantiate_trainer
            seed_everything_default=0,
            # Parse errors come back as exceptions (a short message instead of the usage: parse_errors.py), and
            # abbreviated options are refused (--trainer.max_epoch is not --trainer.max_epochs).
            parser_kwargs={
                "prog": "python -m lit_transfer",
                "description": DESCRIPTION,
                "exit_on_error": False,
                "allow_abbrev": False,
            },
            args=args,
        )
    except Interrupted as err:
        sys.stderr.write(f"lit_transfer: {err}\n")
        sys.exit(err.exit_code)
    except UserError as err:
        run_dirs.release_unused_run_dir()  # claimed, but the run stopped before writing anything
        sys.exit(f"lit_transfer: error: {err}")
