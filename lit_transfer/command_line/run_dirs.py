"""Each command's own run folder, every logger writing into it, and ``latest``: the stage's newest finished fit.

Lightning's loggers pick the next ``version_<n>`` by listing the folder, which races when two runs start
together, and each explicit logger would write under its own ``save_dir`` (``lightning_logs/version_0``). Here
the folder is claimed once with an atomic ``mkdir``, and checkpoints, ``config.yaml``, the CSV and TensorBoard
logs (and any logger a user names) and ``results.json`` all go into it.

A finished ``fit`` points ``<stage>/latest`` at its folder (``runs/pretrain/latest -> version_3``), so that stage
two's config can name stage one's checkpoint without a number. Version numbers count ``version_*`` folders only
(here and in Lightning's loggers), so the link never takes one.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_transfer.errors import UserError

RUN_DIR_ENV = "LIT_TRANSFER_RUN_DIR"  # how DDP worker processes learn the run directory rank 0 claimed
LATEST = "latest"  # <stage>/latest -> version_<n>, the stage's newest finished fit


def claim_run_dir(root: str | os.PathLike) -> Path:
    """Create ``<root>/version_<n>`` for the next free ``n``; ``mkdir`` is atomic, so two runs never share one.

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


def release_unused_run_dir() -> None:
    """Remove the claimed folder if the command stopped before writing anything into it."""
    run_dir = os.environ.pop(RUN_DIR_ENV, None)
    if run_dir and Path(run_dir).is_dir() and not any(Path(run_dir).iterdir()):
        Path(run_dir).rmdir()


def point_latest(run_dir: Path) -> None:
    """Point ``<stage>/latest`` at ``run_dir`` (a relative link, so the folder can move), swapped in with one
    ``rename``: a reader sees the old folder or the new one, never no link. A file or folder named ``latest`` that is
    not a link is the user's own, and stays (with a warning)."""
    link = run_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        rank_zero_info(f"lit_transfer: warning: {link} is not a link: left as it is, not pointed at {run_dir.name}")
        return
    temporary = run_dir.parent / f".{LATEST}.{os.getpid()}.tmp"
    try:
        temporary.unlink(missing_ok=True)  # left by a process of the same id that was killed here
        temporary.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(temporary, link)  # one rename(2); onto a folder made meanwhile it fails and the folder stays
    except OSError as err:
        temporary.unlink(missing_ok=True)
        rank_zero_info(f"lit_transfer: warning: {link} not pointed at {run_dir.name}: {err}")


def follow_latest(ckpt_path: str | None, data_options: str = "") -> str | None:
    """``ckpt_path`` with a ``<stage>/latest`` link in it replaced by the folder it points at, so that the run
    records ``runs/pretrain/version_3/...`` (that run's for good), not a link that moves on. A checkpoint under a
    ``latest`` that is not there means that stage has not finished a fit here: one line with the command that
    trains it (``configs/<stage>.yaml`` with ``data_options``, the data options of this command line)."""
    parts = Path(ckpt_path).parts if ckpt_path else ()
    if LATEST not in parts[1:]:
        return ckpt_path
    at = parts.index(LATEST, 1)
    stage, link = Path(*parts[:at]), Path(*parts[: at + 1])
    if not Path(ckpt_path).is_file():
        config = Path("configs") / f"{stage.name}.yaml"
        command = (
            f"python -m lit_transfer fit --config {config}{data_options}"
            if config.is_file()
            else f"a fit with --trainer.default_root_dir {stage}"
        )
        why = f"{link} holds no such file" if link.exists() else f"{stage} has no finished run yet"
        raise UserError(f"{ckpt_path} does not exist ({why}): first run {command}, or give --ckpt_path another one")
    if not link.is_symlink():
        return ckpt_path  # the user's own folder named latest
    return str(stage / os.readlink(link) / Path(*parts[at + 1 :]))


def loggers_into(logger: Any, run_dir: Path) -> Any:
    """The ``--trainer.logger`` configuration (one class_path/init_args namespace, a list of them, or a bool) with
    every logger's folder set to ``run_dir``: ``save_dir`` (or ``root_dir``), and for loggers that version their
    output (CSV, TensorBoard) an empty ``name`` and ``version``, so they write into ``run_dir`` itself."""
    if isinstance(logger, list):
        return [loggers_into(one, run_dir) for one in logger]
    if not isinstance(logger, Namespace) or "class_path" not in logger:
        return logger
    init = logger.get("init_args") or Namespace()
    params = _init_params(logger.class_path)
    for key in ("save_dir", "root_dir"):
        if key in params:
            init[key] = str(run_dir)
    if _versions(logger.class_path):
        init.name, init.version = "", ""
    logger.init_args = init
    return logger


def refuse_overwrite(trainer: L.Trainer, ckpt_path: str | None) -> None:
    """A checkpoint folder the user named must not hold another run's checkpoints."""
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint) or cb.dirpath is None:
            continue  # no dirpath: checkpoints go into this run's fresh directory
        existing = sorted(Path(cb.dirpath).glob("*.ckpt"))
        resuming_here = ckpt_path and Path(ckpt_path).resolve().parent == Path(cb.dirpath).resolve()
        if existing and not resuming_here:
            raise UserError(
                f"checkpoint folder {cb.dirpath} already holds {existing[0].name} from another run: "
                "choose an empty dirpath, or leave dirpath unset so each run gets its own folder"
            )


def default_loggers(run_dir: Path) -> list[Logger]:
    """The CSV log and the same scalars for TensorBoard (``tensorboard --logdir runs``), both in ``run_dir``."""
    return [CSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="", version="")]


def with_save_dir(args: list[str]) -> list[str]:
    """``--trainer.logger TensorBoardLogger`` (or CSVLogger) with a ``save_dir`` added where none is given: the two
    require one to parse, and every logger's folder becomes the run folder anyway (``loggers_into``)."""
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


def _init_params(class_path: str) -> set[str]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return set(inspect.signature(cls.__init__).parameters)


def _versions(class_path: str) -> bool:
    """Loggers that add ``<name>/version_<n>`` below their save_dir (Lightning's CSV and TensorBoard loggers)."""
    return class_path.rpartition(".")[2] in ("CSVLogger", "TensorBoardLogger")
