"""checkpoint.py's decisions, quick and in-process on small checkpoint files: resume or transfer, the layers a
transfer copies, and the errors that name the file. The command line's own runs: test_pipeline.py, test_resume.py."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lit_transfer import DigitsDataModule, FreezeFeatures
from lit_transfer.checkpoint import (
    FORMAT,
    MARKER,
    POSITIONAL_NAMES,
    AtomicCheckpointIO,
    copy_weights,
    load_checkpoint,
    load_network,
    same_stage,
)
from lit_transfer.errors import UserError
from lit_transfer.model import WEIGHT_LAYERS, Backbone, Head, weight_layers
from lit_transfer.module import TransferModule


def network_state(backbone: Backbone, head: Head) -> dict[str, torch.Tensor]:
    """The weights as a checkpoint's ``state_dict`` names them (``backbone.conv1.weight``, ...)."""
    return nn.ModuleDict({"backbone": backbone, "head": head}).state_dict()


def stage_checkpoint(path: Path, *, batch_norm: bool = False, frozen_stage: bool = False) -> Path:
    """A checkpoint as stage one writes it (5-9 of MNIST), with a freshly initialised network."""
    torch.manual_seed(1)
    state = network_state(Backbone(batch_norm), Head(5))
    marker = {"format": 1, "dataset": "mnist", "digits": [5, 6, 7, 8, 9], "num_classes": 5}  # as CheckpointMarker's
    marker["frozen_stage"] = frozen_stage
    torch.save({"state_dict": state, MARKER: marker}, path)
    return path


@pytest.mark.parametrize(
    "digits, dataset, freezes, resumes",
    [
        ([5, 6, 7, 8, 9], "mnist", False, True),  # the same stage: resume it
        ([0, 1, 2, 3, 4], "mnist", True, False),  # stage two: transfer
        ([5, 6, 7, 8, 9], "mnist", True, False),  # the same digits, but a frozen stage: transfer
        ([5, 6, 7, 8, 9], "fashion_mnist", False, False),  # another dataset's classes 5-9: transfer
    ],
    ids=["same-stage", "stage-two", "frozen", "other-dataset"],
)
def test_a_checkpoint_resumes_only_the_stage_that_wrote_it(digits, dataset, freezes, resumes, tmp_path: Path):
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    data = DigitsDataModule(str(tmp_path), digits=digits, dataset=dataset, download=False)
    trainer = L.Trainer(callbacks=[FreezeFeatures()] if freezes else [], logger=False, enable_checkpointing=False)
    assert same_stage(str(path), data, trainer) is resumes


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_transfer_layers_copies_exactly_the_first_layers(layers: int, tmp_path: Path) -> None:
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    torch.manual_seed(2)
    module = TransferModule(transfer_layers=layers)  # --model.transfer_layers
    backbone, head = module.backbone, module.head
    before = [layer.weight.clone() for layer in weight_layers(backbone, head)]
    module.transfer_from(str(path))  # what a stage-two fit does with its --ckpt_path or --model.init_from
    source = torch.load(path, weights_only=True)["state_dict"]
    for i, (name, layer) in enumerate(zip(WEIGHT_LAYERS, weight_layers(backbone, head), strict=True)):
        key = next(k for k in source if k.endswith(f"{name}.weight"))
        expected = source[key] if i < layers else before[i]
        assert torch.equal(layer.weight, expected), name


@pytest.mark.parametrize("theirs", [True, False], ids=["with", "without"])
def test_transfer_between_backbones_with_and_without_batch_norm_names_the_option(theirs: bool, tmp_path: Path):
    path = stage_checkpoint(tmp_path / "stage_one.ckpt", batch_norm=theirs)
    with pytest.raises(UserError) as err:
        copy_weights(str(path), Backbone(batch_norm=not theirs), Head(5))
    assert str(err.value) == (
        f"the backbone in {path} was trained {'with' if theirs else 'without'} BatchNorm layers: give "
        f"--model.batch_norm {str(theirs).lower()} to transfer from it"
    )


def test_a_foreign_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "someone_else.ckpt"
    torch.save({"state_dict": {}}, path)
    for load in (lambda: AtomicCheckpointIO().load_checkpoint(path), lambda: same_stage(str(path), None, None)):
        with pytest.raises(UserError) as err:
            load()
        assert str(err.value) == (
            f"{path} is not a lit_transfer checkpoint (no 'lit_transfer' entry): "
            "pass a .ckpt file from a lit_transfer run's checkpoints/ folder"
        )


def test_a_checkpoint_from_a_newer_format_is_refused_and_one_without_a_format_loads(tmp_path: Path) -> None:
    newer = tmp_path / "newer.ckpt"
    checkpoint = torch.load(stage_checkpoint(newer), weights_only=True)
    checkpoint[MARKER]["format"] = FORMAT + 1
    torch.save(checkpoint, newer)
    with pytest.raises(UserError) as err:
        load_network(newer)
    assert str(err.value) == f"{newer} was written by a newer lit_transfer (format {FORMAT + 1}): upgrade"
    older = tmp_path / "older.ckpt"  # markers had no "format" before format 1
    del checkpoint[MARKER]["format"]
    torch.save(checkpoint, older)
    assert load_network(older)[2]["digits"] == [5, 6, 7, 8, 9]


def test_a_checkpoint_from_before_the_layers_had_names_loads_with_todays_names(tmp_path: Path) -> None:
    # Before 2026-12 the layers sat in an nn.Sequential: its positions named the weights, and FreezeFeatures' saved
    # parameter groups (a resume after unfreezing reads them back)
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    today = dict(checkpoint["state_dict"])
    positions = {new: old for old, new in POSITIONAL_NAMES.items()}
    old_name = {k: next((positions[p] + k[len(p) :] for p in positions if k.startswith(p)), k) for k in today}
    checkpoint["state_dict"] = {old_name[k]: v for k, v in today.items()}
    group = {"params": [old_name["backbone.conv1.weight"], old_name["head.fc2.bias"]], "lr": 1.0}
    checkpoint["callbacks"] = {"FreezeFeatures{'depth': 3}": {"internal_optimizer_metadata": {0: [group]}}}
    torch.save(checkpoint, path)
    assert "backbone.0.weight" in checkpoint["state_dict"] and "head.3.bias" in checkpoint["state_dict"]

    loaded = load_checkpoint(path)
    assert loaded["state_dict"].keys() == today.keys()
    assert all(torch.equal(loaded["state_dict"][k], today[k]) for k in today)
    groups = loaded["callbacks"]["FreezeFeatures{'depth': 3}"]["internal_optimizer_metadata"][0]
    assert groups == [{"params": ["backbone.conv1.weight", "head.fc2.bias"], "lr": 1.0}]


def transfer_line(path: Path, backbone: Backbone, head: Head, monkeypatch: pytest.MonkeyPatch, **options) -> str:
    """The line a transfer prints (through Lightning's rank_zero_info, which a run's console shows)."""
    lines: list[str] = []
    monkeypatch.setattr("lit_transfer.checkpoint.rank_zero_info", lines.append)
    copy_weights(str(path), backbone, head, **options)
    assert len(lines) == 1
    return lines[0]


def test_the_transfer_line_names_the_layers_copied_and_a_new_head(tmp_path: Path, monkeypatch) -> None:
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    line = transfer_line(path, Backbone(), Head(10), monkeypatch)
    assert line == (
        f"lit_transfer: transferred conv1, conv2, fc1; its head has 5 classes and this model 10, so the last layer "
        f"is newly initialised from {path} (classes 5, 6, 7, 8, 9)"
    )
    with_bn = stage_checkpoint(tmp_path / "with_bn.ckpt", batch_norm=True)
    line = transfer_line(with_bn, Backbone(batch_norm=True), Head(5), monkeypatch)
    assert line == f"lit_transfer: transferred conv1, bn1, conv2, bn2, fc1, fc2 from {with_bn} (classes 5, 6, 7, 8, 9)"


def test_a_layer_asked_for_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    with pytest.raises(UserError) as err:
        copy_weights(str(path), Backbone(), Head(10), transfer_layers=4)  # fc2: 5 classes there, 10 here
    assert str(err.value) == f"layer 4 in {path} has another shape than this model's: transfer fewer layers"


def test_load_network_gives_the_trained_network_frozen_whatever_its_marker_says(tmp_path: Path) -> None:
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint[MARKER]["num_classes"]  # the head's width comes from its weights first
    torch.save(checkpoint, path)
    backbone, head, meta = load_network(path)
    assert head.num_classes == 5 and meta["digits"] == [5, 6, 7, 8, 9]
    state = network_state(backbone, head)
    assert state.keys() == checkpoint["state_dict"].keys()
    assert all(torch.equal(v, checkpoint["state_dict"][k]) for k, v in state.items())
    parameters = [*backbone.parameters(), *head.parameters()]
    assert not any(p.requires_grad for p in parameters) and not backbone.training and not head.training


def test_weights_of_another_network_are_a_user_error_naming_the_file(tmp_path: Path) -> None:
    path = stage_checkpoint(tmp_path / "stage_one.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["head.fc2.weight"]
    torch.save(checkpoint, path)
    with pytest.raises(UserError) as err:
        load_network(path)
    assert str(err.value) == (
        f"the weights in {path} do not fit this model (different layers or shapes): "
        "pass a checkpoint of lit_transfer's network"
    )
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match=f"^{re.escape(str(foreign))} is not a lit_transfer checkpoint"):
        load_network(foreign)


def test_a_checkpoint_is_written_into_folders_that_do_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "pretrain" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, MARKER: {"format": 1}}, path)
    assert torch.load(path, weights_only=True)[MARKER] == {"format": 1}
