"""Checkpoints of earlier versions still transfer, resume and test: those written before the layers had names
(``backbone.0.weight``, ...), and those of lit_transfer 0.1.0 (written by that version's own code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, common_args, only_run, results, run_cli

from lit_transfer.checkpoint import POSITIONAL_NAMES
from lit_transfer.module import TransferModule


def old_name(key: str) -> str:
    new_to_old = {new: old for old, new in POSITIONAL_NAMES.items()}
    prefix = next(p for p in new_to_old if key.startswith(p))
    return new_to_old[prefix] + key[len(prefix) :]


def positional(path: Path, to: Path) -> Path:
    """A copy of a checkpoint with the parameter names an older lit_transfer wrote, wherever it wrote them: the
    weights and FreezeFeatures' parameter groups (as checked against checkpoints of commit 0458ebf)."""
    state = torch.load(path, weights_only=True)
    state["state_dict"] = {old_name(k): v for k, v in state["state_dict"].items()}
    for callback in state["callbacks"].values():
        for groups in callback.get("internal_optimizer_metadata", {}).values():
            for group in groups:
                group["params"] = [old_name(name) for name in group["params"]]
    torch.save(state, to)
    return to


def test_positional_checkpoints_transfer_resume_and_test(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    pre = ["fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pre")]
    run_cli(*pre, "--trainer.max_epochs=1")
    new = only_run(runs / "pre") / "checkpoints" / "last.ckpt"
    old = positional(new, tmp_path / "old.ckpt")
    assert "backbone.0.weight" in torch.load(old, weights_only=True)["state_dict"]
    weights = torch.load(new, weights_only=True)["state_dict"]

    # transfer: stage two starts from the old file's weights and keeps the frozen backbone as it was
    run_cli("fit", "--config=configs/finetune.yaml", *common_args(mnist_root, runs, "fine"), f"--ckpt_path={old}")
    fine = torch.load(only_run(runs / "fine") / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(fine["backbone.conv1.weight"], weights["backbone.conv1.weight"])
    assert torch.equal(fine["backbone.conv2.weight"], weights["backbone.conv2.weight"])

    # resume: the old file and the new one continue the same stage to the same weights, in both stages
    fine_new = only_run(runs / "fine") / "checkpoints" / "last.ckpt"
    fine_old = positional(fine_new, tmp_path / "fine-old.ckpt")
    assert "head.0.weight" in str(torch.load(fine_old, weights_only=True)["callbacks"]["FreezeFeatures"])
    for config, stage_new, stage_old in (("pretrain", new, old), ("finetune", fine_new, fine_old)):
        for name, ckpt in ((f"{config}-old", stage_old), (f"{config}-new", stage_new)):
            args = common_args(mnist_root, runs, name)
            run_cli("fit", f"--config=configs/{config}.yaml", *args, "--trainer.max_epochs=6", f"--ckpt_path={ckpt}")
        a, b = (only_run(runs / f"{config}-{n}") / "checkpoints" / "last.ckpt" for n in ("old", "new"))
        for key, value in torch.load(a, weights_only=True)["state_dict"].items():
            assert torch.equal(value, torch.load(b, weights_only=True)["state_dict"][key]), key

    # test: the old file evaluates as the new one does
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "test-old"), f"--ckpt_path={old}")
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "test-new"), f"--ckpt_path={new}")
    old_test, new_test = (results(only_run(runs / name / "test")) for name in ("test-old", "test-new"))
    assert old_test["test_loss"] == new_test["test_loss"]


V0_1_0 = "8be2936d6ca1f42f3cb56c7e578b38d2124619e7"  # the last commit of lit_transfer 0.1.0


def write_with_0_1_0(tmp_path: Path, *args: str) -> None:
    """Run ``python -m lit_transfer`` of lit_transfer 0.1.0 itself (its package from this repository's history)."""
    old = tmp_path / "v0.1.0"
    old.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", V0_1_0, "lit_transfer"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"lit_transfer 0.1.0 is not in this checkout's git history ({err}): a shallow clone?")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": str(old)}  # and run from there: python -m puts the working folder first
    subprocess.run([sys.executable, "-m", "lit_transfer", *args], env=env, cwd=old, check=True, capture_output=True)


def test_checkpoints_of_0_1_0_resume_transfer_evaluate_and_load(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    old_args = common_args(mnist_root, runs, "old")
    write_with_0_1_0(tmp_path, "fit", f"--config={REPO / 'configs/pretrain.yaml'}", *old_args, *tiny)
    old = only_run(runs / "old") / "checkpoints" / "last.ckpt"
    assert "cache_features" in torch.load(old, weights_only=True)["hyper_parameters"]  # really 0.1.0's format

    # resume: the same stage continues from the old file (its epoch, not a fresh start)
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "resume"), f"--ckpt_path={old}")
    resumed = torch.load(only_run(runs / "resume") / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 5 and resumed["global_step"] == 2 + 4 * 3  # 2 old steps, 4 more epochs of 3

    # transfer: stage two starts from the old file's backbone, frozen
    run_cli(
        "fit", "--config=configs/finetune.yaml", *common_args(mnist_root, runs, "fine"), *tiny, f"--ckpt_path={old}"
    )
    fine = torch.load(only_run(runs / "fine") / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = torch.load(old, weights_only=True)["state_dict"]
    assert torch.equal(fine["backbone.conv2.weight"], weights["backbone.conv2.weight"])

    # evaluate, and load as a Lightning user would
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "test"), f"--ckpt_path={old}")
    assert results(only_run(runs / "test" / "test"))["test_images"] == 20
    module = TransferModule.load_from_checkpoint(old, map_location="cpu")
    assert torch.equal(module.backbone.conv1.weight, weights["backbone.conv1.weight"])
