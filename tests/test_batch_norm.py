"""A backbone with BatchNorm (``--model.batch_norm true``): stage two keeps a frozen BatchNorm frozen (its weights
and running statistics bit-identical), where Lightning's default lets its statistics drift; real CLI runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import common_args, only_run, run_cli

BN = "--model.batch_norm=true"
NORM_KEYS = [f"backbone.bn{i}.{name}" for i in (1, 2) for name in ("weight", "bias", "running_mean", "running_var")]


def state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture
def stage_one(mnist_root: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    run_cli(
        "fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pre"), BN, "--trainer.max_epochs=1"
    )
    return only_run(runs / "pre") / "checkpoints" / "last.ckpt"


def finetune(mnist_root: Path, runs: Path, name: str, source: Path, *extra: str) -> dict[str, torch.Tensor]:
    args = [*common_args(mnist_root, runs, name), BN, "--trainer.max_epochs=2", f"--ckpt_path={source}", *extra]
    run_cli("fit", "--config=configs/finetune.yaml", *args)
    return state(only_run(runs / name))


def test_a_frozen_batch_norm_stays_as_stage_one_left_it(stage_one: Path, mnist_root: Path, tmp_path: Path) -> None:
    before = torch.load(stage_one, weights_only=True)["state_dict"]
    assert set(NORM_KEYS) <= set(before)
    after = finetune(mnist_root, tmp_path / "runs", "fine", stage_one)
    for key in [*NORM_KEYS, "backbone.bn1.num_batches_tracked", "backbone.conv2.weight"]:
        assert torch.equal(before[key], after[key]), f"{key} changed while frozen"
    assert not torch.equal(before["head.fc1.weight"], after["head.fc1.weight"])  # the head did train


def test_lightnings_default_lets_the_frozen_statistics_drift(stage_one: Path, mnist_root: Path, tmp_path: Path):
    # --freeze.train_bn true: BaseFinetuning's default, for the comparison; the same test as above fails with it
    before = torch.load(stage_one, weights_only=True)["state_dict"]
    after = finetune(mnist_root, tmp_path / "runs", "drift", stage_one, "--freeze.train_bn=true")
    assert not torch.equal(before["backbone.bn2.running_mean"], after["backbone.bn2.running_mean"])
    assert torch.equal(before["backbone.conv2.weight"], after["backbone.conv2.weight"])  # the convolutions stay


def test_cached_features_through_a_frozen_batch_norm_give_the_same_updates(stage_one, mnist_root, tmp_path, caplog):
    cached = finetune(mnist_root, tmp_path / "runs", "cached", stage_one)
    assert "features of 48 train images are cached" in caplog.text
    plain = finetune(mnist_root, tmp_path / "runs", "plain", stage_one, "--speed.feature_cache=false")
    for key, value in plain.items():
        assert torch.equal(value, cached[key]), key


def test_transfer_between_backbones_with_and_without_batch_norm_is_a_one_line_error(
    stage_one: Path, mnist_root: Path, tmp_path: Path
) -> None:
    args = [*common_args(mnist_root, tmp_path / "runs", "plain"), f"--ckpt_path={stage_one}"]
    with pytest.raises(SystemExit) as stopped:
        run_cli("fit", "--config=configs/finetune.yaml", *args)
    message = str(stopped.value.code)
    assert "trained with BatchNorm layers: give --model.batch_norm true" in message and "\n" not in message
    assert not list((tmp_path / "runs" / "plain").rglob("*.ckpt"))  # stopped before anything trained


def test_evaluating_a_batch_norm_checkpoint_needs_no_option(stage_one: Path, mnist_root: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "t"), f"--ckpt_path={stage_one}")
    assert list(runs.rglob("results*.json"))


def test_a_batch_norm_checkpoint_exports_and_loads_back(stage_one: Path, tmp_path: Path) -> None:
    from lit_transfer.export import load_safetensors, main
    from lit_transfer.export.formats import from_checkpoint

    path = main(
        ["--ckpt_path", str(stage_one), "--format", "safetensors", "--output", str(tmp_path / "bn.safetensors")]
    )
    loaded, info = load_safetensors(path)
    assert "Backbone(batch_norm=True)" in info["architecture"]["lit_transfer"]
    expected, _ = from_checkpoint(stage_one)
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(images), expected(images))
