"""Checkpoints written before the layers had names (``backbone.0.weight``, ...) still transfer, resume and test."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import common_args, only_run, results, run_cli

from lit_transfer.checkpoint import POSITIONAL_NAMES


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
