"""The two-stage pipeline through the real CLI on tiny synthetic IDX files: configs, handoff, resume, reverse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import CONFIGS, common_args, folder_args, only_run, results, run_cli, write_image_folder
from torchvision.datasets import MNIST

from lit_transfer.checkpoint import MARKER
from lit_transfer.data import DigitsDataModule
from lit_transfer.module import TransferModule

FIT_CONFIGS = [c for c in CONFIGS if c.stem != "study"]  # study.yaml is python -m lit_transfer.study's (test_study.py)


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=[c.stem for c in FIT_CONFIGS])
def test_every_config_runs(config: Path, mnist_root: Path, tmp_path: Path) -> None:
    args = common_args(mnist_root, tmp_path / "runs", "x")
    if "folder" in config.stem:  # an image folder's config: a folder of images, its cache under tmp_path
        args = folder_args(write_image_folder(tmp_path / "imgs"), tmp_path / "runs", "x", tmp_path / "cache")
    if "finetune" in config.stem:  # no stage one here (the handoff: the tests below, and test_docs.py's Quick start)
        args.append("--ckpt_path=null")
    run_cli("fit", "--config", config, *args, "--trainer.fast_dev_run=true")
    report = results(only_run(tmp_path / "runs" / "x"))
    assert report["test_images"] > 0
    assert report["stage"] == ("finetune" if "finetune" in config.stem else "pretrain")


def test_stage_two_configs_start_from_their_stage_ones_newest_run() -> None:
    configs = {c.stem: yaml.safe_load(c.read_text()) for c in FIT_CONFIGS}
    stage_one = {"finetune": "pretrain", "reverse_finetune": "reverse_pretrain", "folder_finetune": "pretrain"}
    assert {name for name, config in configs.items() if "ckpt_path" in config} == set(stage_one)
    for two, one in stage_one.items():
        root = configs[one]["trainer"]["default_root_dir"]
        assert configs[two]["ckpt_path"] == f"{root}/latest/checkpoints/last.ckpt", two


def pretrain(mnist_root: Path, runs: Path, *extra: str) -> Path:
    run_cli(
        "fit",
        "--config=configs/pretrain.yaml",
        *common_args(mnist_root, runs, "pretrain"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        *extra,
    )
    return only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def test_handoff_transfers_weights_and_starts_fresh(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # Stage one with settings that stage two must NOT inherit (LightningCLI >= 2.5.5 would copy them over).
    source = pretrain(
        mnist_root, runs, "--model.optimizer=torch.optim.Adadelta", "--model.optimizer.lr=0.5", "--data.batch_size=8"
    )
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "finetune"),
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3",
        f"--ckpt_path={source}",
    )
    run = only_run(runs / "finetune")
    before, after = state(source), state(run / "checkpoints" / "last.ckpt")
    for key, value in before["state_dict"].items():
        if key.startswith("backbone."):
            assert torch.equal(value, after["state_dict"][key]), f"{key} changed while frozen"
    head = [k for k in before["state_dict"] if k.startswith("head.")]
    assert any(not torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in head), "head did not train"
    # Fresh loops: stage two's 2 epochs of 3 steps, not a continuation of stage one (1 epoch of 2 steps).
    assert after["epoch"] == 2 and after["global_step"] == 6
    # Fresh optimizer over the head only, with finetune.yaml's learning rate, not stage one's 0.5.
    (group,) = after["optimizer_states"][0]["param_groups"]
    assert group["lr"] == 1.0 and group["rho"] == 0.95 and group["eps"] == 1e-7
    assert len(group["params"]) == 4  # fc1 and fc2 weight and bias
    assert after["datamodule_hyper_parameters"]["digits"] == [0, 1, 2, 3, 4]
    assert after["datamodule_hyper_parameters"]["batch_size"] == 16
    assert after[MARKER]["frozen_stage"] is True and after[MARKER]["digits"] == [0, 1, 2, 3, 4]
    report = results(run)
    assert report["stage"] == "finetune" and report["epochs"] == 2
    assert report["frozen_params"] == 9568 and report["trainable_params"] == 590597
    assert list(report["per_digit_acc"]) == ["0", "1", "2", "3", "4"]
    assert report["checkpoint"] == str(run / "checkpoints" / "last.ckpt")


def test_same_stage_checkpoint_resumes(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs)
    args = ["fit", "--config=configs/finetune.yaml", *common_args(mnist_root, runs, "finetune")]
    run_cli(*args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", f"--ckpt_path={source}")
    first = only_run(runs / "finetune") / "checkpoints" / "last.ckpt"
    run_cli(*args, "--trainer.max_epochs=2", "--trainer.limit_train_batches=3", f"--ckpt_path={first}")
    second = sorted((runs / "finetune").glob("version_*"))[-1] / "checkpoints" / "last.ckpt"
    resumed = state(second)
    # A continuation: epoch 2 of the same run, the optimizer state carried on (Adadelta's per-parameter step).
    assert resumed["epoch"] == 2 and resumed["global_step"] == 6
    steps = {s["step"].item() for s in resumed["optimizer_states"][0]["state"].values()}
    assert steps == {6.0}
    assert state(first)["global_step"] == 3  # the earlier run's checkpoint was left as it was


def test_init_from_and_new_head_for_other_class_count(mnist_root: Path, tmp_path: Path, caplog) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs)
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "three"),
        "--data.digits=[1,2,3]",
        f"--model.init_from={source}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
    )
    assert "so the last layer is newly initialised" in caplog.text
    after = state(only_run(runs / "three") / "checkpoints" / "last.ckpt")
    before = state(source)
    assert torch.equal(after["state_dict"]["backbone.conv1.weight"], before["state_dict"]["backbone.conv1.weight"])
    assert after["state_dict"]["head.fc2.weight"].shape == (3, 128)
    assert results(only_run(runs / "three"))["digits"] == [1, 2, 3]


def test_frozen_stage_without_weights_says_so(mnist_root: Path, tmp_path: Path, caplog) -> None:
    runs = tmp_path / "runs"
    base = ["--config=configs/finetune.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    run_cli("fit", *base, *common_args(mnist_root, runs, "random"), "--ckpt_path=null")  # not the config's stage one
    assert "freezes layers but no weights were given (--ckpt_path or --model.init_from)" in caplog.text
    caplog.clear()
    run_cli("fit", *base, *common_args(mnist_root, runs, "transferred"), f"--ckpt_path={pretrain(mnist_root, runs)}")
    assert "starting this stage from the weights" in caplog.text and "no weights were given" not in caplog.text


def test_max_time_stops_training(mnist_root: Path, tmp_path: Path) -> None:
    # The default Timer callback (for the training time) must not switch Lightning's max_time off.
    runs = tmp_path / "runs"
    limit = ["--trainer.max_epochs=300", "--trainer.max_time=00:00:00:01", "--trainer.limit_val_batches=1"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "limited"), *limit)
    done = results(only_run(runs / "limited"))
    assert 1 <= done["epochs"] < 300 and 1.0 <= done["train_time_s"] < 10


def test_checkpointing_off_writes_no_checkpoint(mnist_root: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    off = ["--trainer.enable_checkpointing=false", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "off"), *off)
    run = only_run(runs / "off")
    assert not list(run.rglob("*.ckpt")) and results(run)["checkpoint"] is None
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "checkpoint for the next stage" not in printed


def test_reverse_configs_hand_off_through_the_printed_command(mnist_root: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    base = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    run_cli("fit", "--config=configs/reverse_pretrain.yaml", *common_args(mnist_root, runs, "a"), *base)
    source = only_run(runs / "a") / "checkpoints" / "last.ckpt"
    assert state(source)[MARKER]["digits"] == [0, 1, 2, 3, 4]
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("next: ")]
    expected = f"configs/reverse_finetune.yaml --data.data_dir {mnist_root} --ckpt_path {source}"
    assert line == f"next: python -m lit_transfer fit --config {expected}"
    run_cli(*line.split()[4:], *common_args(mnist_root, runs, "b"), *base)  # the printed command, made tiny
    report = results(only_run(runs / "b"))
    assert report["digits"] == [5, 6, 7, 8, 9] and report["stage"] == "finetune"
    assert torch.equal(
        state(source)["state_dict"]["backbone.conv2.weight"],
        state(report["checkpoint"])["state_dict"]["backbone.conv2.weight"],
    )


def test_test_subcommand_reports_real_digits(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs)
    fit_report = results(only_run(runs / "pretrain"))
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "eval"), f"--ckpt_path={source}")
    report = results(only_run(runs / "eval" / "test"))  # an evaluation gets a folder of its own
    assert list(report["per_digit_acc"]) == ["5", "6", "7", "8", "9"]
    assert report["test_images"] == 20  # 4 test images of each of the 5 digits
    assert report["test_acc"] == pytest.approx(fit_report["test_acc"])  # the fit's final weights = last.ckpt
    assert report["train_time_s"] is None
    # Recomputed by hand: a per-image mean over all 20 images, though the batches are 16 + 4.
    datamodule = DigitsDataModule(data_dir=str(mnist_root), digits=[5, 6, 7, 8, 9], download=False)
    datamodule.setup("test")
    images, labels = datamodule.test_dataloader().inputs, datamodule.test_dataloader().targets
    model = TransferModule(num_classes=5)
    model.load_state_dict(state(source)["state_dict"])
    with torch.no_grad():
        logits = model.eval()(images)
    assert report["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert report["test_acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_bf16_mixed_precision_through_trainer_flags(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs, "--trainer.precision=bf16-mixed")
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "finetune"),
        "--trainer.precision=bf16-mixed",
        "--trainer.max_epochs=1",
        f"--ckpt_path={source}",
        "--trainer.callbacks+=probes.RecordDtypes",
        f"--trainer.callbacks.folder={tmp_path / 'probe'}",
    )
    report = results(only_run(runs / "finetune"))
    assert report["precision"] == "bf16-mixed"
    dtypes = json.loads((tmp_path / "probe" / "dtypes.json").read_text())
    assert dtypes and set(dtypes) == {"torch.bfloat16"}  # every training step's dense layer ran under autocast
    assert state(report["checkpoint"])["state_dict"]["head.fc1.weight"].dtype == torch.float32  # master weights
    assert report["test_images"] == 20 and 0.2 < report["test_acc"] <= 1  # better than chance (0.2), on all test images


def test_unfreezing_shows_in_the_parameter_counts(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs)
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "finetune"),
        "--trainer.max_epochs=2",
        "--trainer.callbacks.unfreeze_at_epoch=1",
        f"--ckpt_path={source}",
    )
    report = results(only_run(runs / "finetune"))
    assert (report["trainable_params"], report["frozen_params"]) == (600_165, 0)
    after = state(report["checkpoint"])["state_dict"]["backbone.conv1.weight"]
    assert not torch.equal(after, state(source)["state_dict"]["backbone.conv1.weight"])


def test_predict_writes_each_test_image_with_its_real_and_predicted_digit(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    source = pretrain(mnist_root, runs)
    fit_report = results(only_run(runs / "pretrain"))
    args = common_args(mnist_root, runs, "pred")
    run_cli("predict", "--config=configs/pretrain.yaml", *args, f"--ckpt_path={source}")
    with open(only_run(runs / "pred" / "predict") / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20  # 4 test images of each of the 5 digits
    index = torch.tensor([int(r["test_index"]) for r in rows])
    digit = torch.tensor([int(r["digit"]) for r in rows])
    predicted = torch.tensor([int(r["predicted"]) for r in rows])
    # test_index points into the test file itself: its label there is the row's digit
    assert torch.equal(MNIST(str(mnist_root), train=False).targets[index], digit)
    assert set(digit.tolist()) == {5, 6, 7, 8, 9}
    assert (predicted == digit).float().mean().item() == pytest.approx(fit_report["test_acc"])
    # the same weights by hand: the predicted digit is the argmax, the probability its softmax
    model = TransferModule(num_classes=5)
    model.load_state_dict(state(source)["state_dict"])
    with torch.no_grad():
        probs = model.eval()(MNIST(str(mnist_root), train=False).data[index]).softmax(1)
    assert torch.equal(torch.tensor([5, 6, 7, 8, 9])[probs.argmax(1)], predicted)
    assert torch.allclose(probs.max(1).values, torch.tensor([float(r["probability"]) for r in rows]), atol=1e-6)
