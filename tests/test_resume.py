"""Interrupted runs resume exactly: real SIGKILLs at several points, then ``--ckpt_path last.ckpt``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import process_guard
import pytest
import torch
from helpers import REPO, common_args, only_run, results, write_mnist

pytestmark = pytest.mark.slow


def cli(*args: str, expect_kill: bool = False) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "tests")}
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lit_transfer", *map(str, args)]
    done = process_guard.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if expect_kill:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("resume") / "data", n_train=12)


def stage(data: Path, runs: Path, name: str, config: str = "pretrain") -> list[str]:
    # 60 images of 5-9, 12 held out: 48 to train on, batch 8 -> 6 steps per epoch, 18 in all; last.ckpt every 4
    return [
        "fit",
        f"--config=configs/{config}.yaml",
        *common_args(data, runs, name),
        "--data.batch_size=8",
        "--trainer.max_epochs=3",
        "--trainer.deterministic=true",
        "--last_checkpoint.every_n_train_steps=4",
    ]


def final(run: Path, steps: int = 18) -> tuple[dict, dict]:
    """The run's last.ckpt weights (its final weights after ``steps`` steps: asserted) and results.json."""
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == steps, "last.ckpt must hold the run's final weights"
    return last["state_dict"], results(run)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory) -> tuple[dict, dict]:
    runs = tmp_path_factory.mktemp("reference")
    cli(*stage(data, runs, "ref"))
    return final(only_run(runs / "ref"))


# 18 steps: last.ckpt at 4, 8, 12, 16 and, at the end, 18 (the final weights, which the reference must be too)
@pytest.mark.parametrize(
    "kill_step", [5, 6, 14, 17], ids=["mid-epoch-0", "end-of-epoch-0", "end-of-epoch-1", "mid-epoch-2"]
)
def test_sigkill_then_resume_gives_identical_weights(kill_step: int, data: Path, tmp_path: Path, reference) -> None:
    runs = tmp_path / "runs"
    cli(
        *stage(data, runs, "a"),
        "--trainer.callbacks+=crash.KillAt",
        f"--trainer.callbacks.step={kill_step}",
        expect_kill=True,
    )
    last = only_run(runs / "a") / "checkpoints" / "last.ckpt"
    saved_step = torch.load(last, weights_only=True)["global_step"]
    assert saved_step == 4 * (kill_step // 4) and saved_step < kill_step  # work after it was lost, and redone
    cli(*stage(data, runs, "b"), f"--ckpt_path={last}")
    weights, report = final(only_run(runs / "b"))
    ref_weights, ref_report = reference
    for key, value in ref_weights.items():
        assert torch.equal(value, weights[key]), key
    assert report["test_acc"] == ref_report["test_acc"] and report["test_loss"] == ref_report["test_loss"]
    assert report["train_images"] == ref_report["train_images"]
    # Each epoch's validation accuracy, also from before the resume (kept in the checkpoint: the resumed run logs
    # into a new folder). Resumed from step 12, the last step of epoch 1, Lightning skips that epoch's validation.
    expected = {e: acc for e, acc in ref_report["val_acc_per_epoch"].items() if (kill_step, e) != (14, "1")}
    assert report["val_acc_per_epoch"] == expected and len(ref_report["val_acc_per_epoch"]) == 3


def test_kill_while_saving_keeps_previous_checkpoint(data: Path, tmp_path: Path, reference) -> None:
    runs = tmp_path / "runs"
    cli(
        *stage(data, runs, "a"),
        "--trainer.callbacks+=crash.KillDuringSave",
        "--trainer.callbacks.step=8",
        expect_kill=True,
    )
    folder = only_run(runs / "a") / "checkpoints"
    previous = torch.load(folder / "last.ckpt", weights_only=True)  # still whole and loadable
    assert previous["global_step"] == 4
    assert list(folder.glob(".last.ckpt.*.tmp")), "the half-written file should be the temporary one"
    cli(*stage(data, runs, "b"), f"--ckpt_path={folder / 'last.ckpt'}")
    weights, _ = final(only_run(runs / "b"))
    assert all(torch.equal(v, weights[k]) for k, v in reference[0].items())


def test_ddp_resumes_after_one_process_is_killed(data: Path, tmp_path: Path, reference) -> None:
    runs = tmp_path / "runs"
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp"]
    cli(*stage(data, runs, "whole"), *ddp)
    whole_weights, whole = final(only_run(runs / "whole"), steps=9)
    # Rank 1 dies mid-epoch 1 (each rank takes 3 steps per epoch: 9 in all, last.ckpt every 4).
    kill_rank_1 = ["--trainer.callbacks+=crash.KillAt", "--trainer.callbacks.step=5", "--trainer.callbacks.rank=1"]
    killed = process_guard.run(
        [sys.executable, "-m", "lit_transfer", *stage(data, runs, "a"), *ddp, *kill_rank_1],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode != 0  # rank 0 notices its peer is gone and stops too
    last = only_run(runs / "a") / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    cli(*stage(data, runs, "b"), *ddp, f"--ckpt_path={last}")
    weights, resumed = final(only_run(runs / "b"), steps=9)
    # Every rank starts from the same seed and draws the same random numbers, so rank 0's saved state serves both.
    assert all(torch.equal(v, weights[k]) for k, v in whole_weights.items())
    assert (resumed["test_acc"], resumed["test_images"]) == (whole["test_acc"], whole["test_images"])
    assert len(list(only_run(runs / "b").glob("results*.json"))) == 1  # one writer
    # Against one process the data is split differently (2 x 8 images per step), so only close, not equal.
    assert abs(resumed["test_acc"] - reference[1]["test_acc"]) <= 0.25


@pytest.fixture(scope="module")
def frozen_reference(data: Path, tmp_path_factory) -> tuple[Path, tuple[dict, dict]]:
    """Stage two (backbone frozen, head trained on cached features) from a stage-one checkpoint, uninterrupted."""
    runs = tmp_path_factory.mktemp("frozen")
    cli(*stage(data, runs, "source"))
    source = only_run(runs / "source") / "checkpoints" / "last.ckpt"
    cli(*stage(data, runs, "ref", "finetune"), f"--ckpt_path={source}")
    return source, final(only_run(runs / "ref"))


@pytest.mark.parametrize("kill_step", [5, 14], ids=["mid-epoch-0", "mid-epoch-2"])
def test_frozen_stage_resumes_exactly(kill_step: int, data: Path, tmp_path: Path, frozen_reference) -> None:
    # The resumed run must rebuild its feature cache from the restored backbone, not the freshly initialised one.
    source, (ref_weights, ref_report) = frozen_reference
    runs = tmp_path / "runs"
    kill = ["--trainer.callbacks+=crash.KillAt", f"--trainer.callbacks.step={kill_step}"]
    cli(*stage(data, runs, "a", "finetune"), f"--ckpt_path={source}", *kill, expect_kill=True)
    last = only_run(runs / "a") / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4 * (kill_step // 4)
    cli(*stage(data, runs, "b", "finetune"), f"--ckpt_path={last}")
    weights, report = final(only_run(runs / "b"))
    assert all(torch.equal(value, weights[key]) for key, value in ref_weights.items())
    assert report["stage"] == "finetune" and report["train_images"] == ref_report["train_images"]
    assert report["frozen_params"] == ref_report["frozen_params"] > 0


@pytest.fixture(scope="module")
def unfreezing_reference(data: Path, tmp_path_factory) -> tuple[Path, tuple[dict, dict]]:
    """Stage two with gradual unfreezing at epoch 1 (frozen epoch 0, whole network epochs 1-2), uninterrupted."""
    runs = tmp_path_factory.mktemp("unfreezing")
    cli(*stage(data, runs, "source"))
    source = only_run(runs / "source") / "checkpoints" / "last.ckpt"
    cli(*stage(data, runs, "ref", "finetune"), UNFREEZE, f"--ckpt_path={source}")
    return source, final(only_run(runs / "ref"))


UNFREEZE = "--trainer.callbacks.unfreeze_at_epoch=1"  # 6 steps per epoch: epoch 1 is steps 7-12


@pytest.mark.parametrize(
    "kill_step",
    [5, 9, 14, 17],
    ids=["before-unfreezing", "mid-unfreeze-epoch", "after-unfreeze-epoch", "mid-epoch-after-unfreezing"],
)
def test_gradually_unfrozen_stage_resumes_exactly(kill_step: int, data: Path, tmp_path: Path, unfreezing_reference):
    # Checkpoints every 4 steps: resumed at step 4 (epoch 0, frozen), 8 (epoch 1, just unfrozen), 12 (end of
    # epoch 1) and 16 (mid-epoch 2). Lightning issue #21901: without FreezeFeatures.on_fit_start the last two
    # resume with the backbone frozen and never train it again.
    source, (ref_weights, ref_report) = unfreezing_reference
    runs = tmp_path / "runs"
    kill = ["--trainer.callbacks+=crash.KillAt", f"--trainer.callbacks.step={kill_step}"]
    cli(*stage(data, runs, "a", "finetune"), UNFREEZE, f"--ckpt_path={source}", *kill, expect_kill=True)
    last = only_run(runs / "a") / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4 * (kill_step // 4)
    cli(*stage(data, runs, "b", "finetune"), UNFREEZE, f"--ckpt_path={last}")
    weights, report = final(only_run(runs / "b"))
    for key, value in ref_weights.items():
        assert torch.equal(value, weights[key]), key
    assert report["test_acc"] == ref_report["test_acc"] and report["test_loss"] == ref_report["test_loss"]
    assert report["frozen_params"] == ref_report["frozen_params"] == 0  # the whole network trained at the end
    moved = torch.load(source, weights_only=True)["state_dict"]["backbone.conv1.weight"]
    assert not torch.equal(weights["backbone.conv1.weight"], moved)  # the backbone did train
