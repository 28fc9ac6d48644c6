"""Bad input: a one-line message naming the problem and the fix, a non-zero exit, nothing trained or written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO, common_args, folder_args, run_cli, write_idx

from lit_transfer.checkpoint import MARKER
from lit_transfer.module import TransferModule


def fails(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code not in (0, None)
    message = exit_info.value.code if isinstance(exit_info.value.code, str) else capsys.readouterr().err.strip()
    assert message.count("\n") == 0, message
    return message


def fit_args(mnist_root: Path, tmp_path: Path, config: str = "pretrain") -> list[str]:
    return ["fit", f"--config=configs/{config}.yaml", *common_args(mnist_root, tmp_path / "runs", config)]


def nothing_written(tmp_path: Path) -> bool:
    return not list((tmp_path / "runs").rglob("*.*"))


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("[5,6,10]", "has [10] outside 0-9: use digits from 0 to 9, e.g. '[0,1,2,3,4]'"),
        ("[]", "is empty: give at least one digit, e.g. --data.digits '[5,6,7,8,9]'"),
        ("[1,2,2]", "repeats [2]: list each digit once, e.g. '[0,1,2,3,4]'"),
        ("[-1,3]", "has [-1] outside 0-9: use digits from 0 to 9, e.g. '[0,1,2,3,4]'"),
    ],
)
def test_bad_digits(digits: str, expected: str, mnist_root: Path, tmp_path: Path, capsys) -> None:
    message = fails(capsys, *fit_args(mnist_root, tmp_path), f"--data.digits={digits}")
    assert message == f"lit_transfer: error: --data.digits {expected}"
    assert nothing_written(tmp_path)


def test_missing_data_without_download(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "nodata"
    empty.mkdir()
    message = fails(capsys, *fit_args(empty, tmp_path))
    assert str(empty / "MNIST" / "raw") in message and "--data.download is false" in message
    assert "train-images-idx3-ubyte" in message
    assert nothing_written(tmp_path) and not list((tmp_path / "runs").rglob("version_*"))


def test_data_dir_pointing_at_raw_folder_gets_a_hint(mnist_root: Path, tmp_path: Path, capsys) -> None:
    message = fails(capsys, *fit_args(mnist_root / "MNIST" / "raw", tmp_path))
    assert "pass its grandparent as --data.data_dir" in message


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "truncated or damaged"),
        ("magic", "not an IDX file"),
        ("count", "holds 100 images but"),
        ("labels", "labels outside 0-9"),
    ],
)
def test_damaged_idx_files(damage: str, expected: str, mnist_root: Path, tmp_path: Path, capsys) -> None:
    raw = mnist_root / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "magic":
        labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    elif damage == "count":
        write_idx(images, torch.zeros(100, 28, 28, dtype=torch.uint8))
    else:
        write_idx(labels, torch.full((120,), 12, dtype=torch.uint8))
    message = fails(capsys, *fit_args(mnist_root, tmp_path))
    assert expected in message and str(raw) in message


def test_foreign_checkpoint_is_refused(mnist_root: Path, tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, foreign)
    message = fails(capsys, *fit_args(mnist_root, tmp_path, "finetune"), f"--ckpt_path={foreign}")
    assert "not a lit_transfer checkpoint" in message
    message = fails(capsys, *fit_args(mnist_root, tmp_path, "finetune"), f"--model.init_from={foreign}")
    assert "not a lit_transfer checkpoint" in message
    message = fails(capsys, "test", "--config=configs/finetune.yaml", f"--ckpt_path={foreign}")
    assert message.startswith(f"lit_transfer: error: {foreign} is not a lit_transfer checkpoint")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert "not a readable PyTorch checkpoint" in fails(
        capsys, *fit_args(mnist_root, tmp_path, "finetune"), f"--ckpt_path={garbage}"
    )
    assert "does not exist" in fails(
        capsys, *fit_args(mnist_root, tmp_path, "finetune"), f"--ckpt_path={tmp_path / 'nope.ckpt'}"
    )
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.parametrize("change", ["one-layer-of-another-shape", "layers-missing"])
def test_checkpoint_whose_backbone_does_not_fit(change: str, mnist_root: Path, tmp_path: Path, capsys) -> None:
    # Every key of the model with the right shapes but conv2's (5x5 kernels), or a backbone without conv2: each
    # on its own must stop the transfer with the one-line error, before anything trains.
    state = TransferModule().state_dict()
    if change == "layers-missing":
        del state["backbone.conv2.weight"], state["backbone.conv2.bias"]
    else:
        state["backbone.conv2.weight"] = torch.zeros(32, 32, 5, 5)
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": state, MARKER: {"format": 1, "digits": [5, 6, 7, 8, 9], "num_classes": 5}}, bad)
    message = fails(capsys, *fit_args(mnist_root, tmp_path, "finetune"), f"--ckpt_path={bad}")
    assert "do not fit this model" in message
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluating_a_checkpoint_with_digits_its_head_cannot_have(
    subcommand: str, mnist_root: Path, tmp_path: Path, capsys
) -> None:
    run_cli(*fit_args(mnist_root, tmp_path), "--trainer.max_epochs=1", "--trainer.limit_train_batches=1")
    (ckpt,) = (tmp_path / "runs" / "pretrain").rglob("last.ckpt")
    args = [f"--data.data_dir={mnist_root}", "--data.download=false", f"--trainer.default_root_dir={tmp_path / 'e'}"]
    message = fails(
        capsys, subcommand, "--config=configs/pretrain.yaml", "--data.digits=[1,2]", *args, f"--ckpt_path={ckpt}"
    )
    assert message == (
        f"lit_transfer: error: {ckpt} has a head for 5 classes (5, 6, 7, 8, 9) and --data.digits gives 2 (1, 2): give "
        "5, or leave out --data.digits to use the checkpoint's own"
    )
    assert not list((tmp_path / "e").rglob("*.json")) and not list((tmp_path / "e").rglob("*.csv"))
    # another dataset, named explicitly, is a contradiction too
    message = fails(
        capsys, subcommand, "--config=configs/pretrain.yaml", "--data.dataset=kmnist", *args, f"--ckpt_path={ckpt}"
    )
    assert message == (
        f"lit_transfer: error: {ckpt} was trained on mnist, not kmnist: leave out --data.dataset to evaluate it on its "
        "own dataset"
    )


def test_evaluating_a_checkpoint_that_names_no_classes_on_data_of_another_width(
    mnist_root: Path, tmp_path: Path, capsys
) -> None:
    # Its marker names no digits (made by hand, or by other code): the config's five digits are kept, and the
    # two-class head cannot take them.
    run_cli(
        *fit_args(mnist_root, tmp_path),
        "--data.digits=[5,6]",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
    )
    (ckpt,) = (tmp_path / "runs" / "pretrain").rglob("last.ckpt")
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint[MARKER]["digits"] = []
    nameless = tmp_path / "nameless.ckpt"
    torch.save(checkpoint, nameless)
    args = [f"--data.data_dir={mnist_root}", "--data.download=false", f"--trainer.default_root_dir={tmp_path / 'e'}"]
    message = fails(capsys, "test", "--config=configs/pretrain.yaml", *args, f"--ckpt_path={nameless}")
    assert message.endswith(
        f"{nameless} has a head for 2 classes (0, 1) and the data has 5 (5, 6, 7, 8, 9): choose 2 with --data.digits"
    )
    assert not list((tmp_path / "e").rglob("*.json"))


@pytest.mark.parametrize(("subcommand", "shorthand"), [("fit", "last"), ("test", "best"), ("predict", "last")])
def test_lightning_ckpt_shorthands_name_the_fix(
    subcommand: str, shorthand: str, mnist_root: Path, tmp_path: Path, capsys
) -> None:
    args = common_args(mnist_root, tmp_path / "runs", "pretrain")
    message = fails(capsys, subcommand, "--config=configs/pretrain.yaml", *args, f"--ckpt_path={shorthand}")
    assert message == (
        f"lit_transfer: error: --ckpt_path {shorthand} would look in this command's own new run folder: pass the "
        "checkpoint's path, e.g. runs/pretrain/latest/checkpoints/last.ckpt (stage one's newest finished run; each run "
        "prints its own)"
    )
    assert nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("config", "stage_one"),
    [("finetune", "pretrain"), ("reverse_finetune", "reverse_pretrain"), ("folder_finetune", "pretrain")],
)
def test_stage_two_before_stage_one_names_the_command_that_trains_it(
    config: str, stage_one: str, mnist_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # A checkout with no runs yet: the config's runs/<stage one>/latest/checkpoints/last.ckpt is not there.
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    folder, runs = config.startswith("folder"), tmp_path / "runs"
    args = common_args(mnist_root, runs, config)
    if folder:  # the folder's images are never looked at: the checkpoint is checked first
        args = folder_args(tmp_path / "imgs", runs, config, tmp_path / "c")
    message = fails(capsys, "fit", f"--config=configs/{config}.yaml", *args)
    missing = f"runs/{stage_one}/latest/checkpoints/last.ckpt"
    data = "" if folder else f" --data.data_dir {mnist_root} --data.download false"  # the data this command was given
    assert message == (
        f"lit_transfer: error: {missing} does not exist (runs/{stage_one} has no finished run yet): first run "
        f"python -m lit_transfer fit --config configs/{stage_one}.yaml{data}, or give --ckpt_path another one"
    )
    assert nothing_written(tmp_path) and not list((tmp_path / "runs").rglob("version_*"))


def test_evaluating_with_a_stage_two_config_means_that_stage_and_names_its_command(
    mnist_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # The config's ckpt_path is where stage two's fit starts (stage one); `test` evaluates stage two's own newest run.
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    args = common_args(mnist_root, Path("runs"), "finetune")
    message = fails(capsys, "test", "--config=configs/finetune.yaml", *args)
    assert message.startswith(
        "lit_transfer: error: runs/finetune/latest/checkpoints/last.ckpt does not exist (runs/finetune has no "
        "finished run yet): first run python -m lit_transfer fit --config configs/finetune.yaml"
    )


def test_evaluating_without_a_checkpoint_says_so(mnist_root: Path, tmp_path: Path, caplog) -> None:
    run_cli("test", "--config=configs/pretrain.yaml", *common_args(mnist_root, tmp_path / "runs", "pretrain"))
    assert "no --ckpt_path: test uses randomly initialised weights" in caplog.text


def test_existing_checkpoints_are_never_overwritten(mnist_root: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"precious")
    message = fails(
        capsys,
        *fit_args(mnist_root, tmp_path),
        "--trainer.callbacks+=ModelCheckpoint",
        f"--trainer.callbacks.dirpath={folder}",
        "--trainer.callbacks.save_last=true",
    )
    assert "already holds last.ckpt" in message
    assert (folder / "last.ckpt").read_bytes() == b"precious"


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# On the CPU the loss is checked every step; on CUDA the first bad step is kept on the device (no per-step sync) and
# checked before each checkpoint. The "deferred" variant runs that accelerator logic on the CPU.
@pytest.mark.parametrize("device", ["cpu", "cpu-deferred", pytest.param("cuda", marks=CUDA)])
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    device: str, mnist_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    optimizer = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=1e20"]  # blows up within a few steps
    if device == "cpu-deferred":
        optimizer += ["--trainer.callbacks+=probes.DeferLossChecks"]
    message = fails(
        capsys,
        *fit_args(mnist_root, tmp_path),
        f"--trainer.accelerator={device.split('-')[0]}",
        *optimizer,
        "--data.batch_size=4",
        "--last_checkpoint.every_n_train_steps=1",
    )
    assert "the training loss became nan at step" in message or "became inf at step" in message
    step = int(message.split(" at step ")[1].split()[0])
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    assert str(last) in message
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["global_step"] == step  # written after the last good step, and not replaced since
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
