"""The LightningModule's own choices, in process and quick: the notebook's optimizer as Keras runs it, what
``predict`` reports per image, the test's per-class summary, the curves and progress bar a fit logs, the model
summary, the weights' layout per device, ``transfer_layers``' bounds, and what a module built in Python saves."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.checkpoint import load_checkpoint
from lit_transfer.errors import UserError
from lit_transfer.module import TransferModule, keras_adadelta


def noise_images(n: int) -> torch.Tensor:
    """``n`` uint8 28x28 images of noise, the same on every call."""
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def keras_adadelta_steps(gradients: list[float], lr: float = 1.0, rho: float = 0.95, epsilon: float = 1e-7) -> float:
    """One weight, starting at 0, after Keras' Adadelta update for each gradient (keras/optimizers/adadelta.py), with
    the defaults of ``optimizer="adadelta"`` in the notebook's Keras example."""
    weight = accumulated_gradient = accumulated_delta = 0.0
    for g in gradients:
        accumulated_gradient = rho * accumulated_gradient + (1 - rho) * g * g
        delta = g * math.sqrt(accumulated_delta + epsilon) / math.sqrt(accumulated_gradient + epsilon)
        accumulated_delta = rho * accumulated_delta + (1 - rho) * delta * delta
        weight -= lr * delta
    return weight


def test_the_optimizer_takes_the_steps_keras_adadelta_takes() -> None:
    gradients = [1.0, -0.5, 2.0, 0.25]
    weight = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = keras_adadelta([weight])
    for g in gradients:
        weight.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
    # torch's defaults (rho 0.9, eps 1e-6) move the weight over twice as far: the check tells them apart
    assert math.isclose(weight.item(), keras_adadelta_steps(gradients), rel_tol=1e-12)


def test_predict_step_gives_the_three_most_probable_labels_or_all_when_fewer() -> None:
    images = noise_images(6)
    labels = torch.arange(6)
    for classes, shown in ((5, 3), (2, 2)):
        torch.manual_seed(classes)
        module = TransferModule(num_classes=classes).eval()
        with torch.no_grad():
            out = module.predict_step((images, labels), 0)
            probabilities = module(images).softmax(1)
        expected, order = probabilities.sort(dim=1, descending=True)
        assert out["top"].shape == (6, shown) and torch.equal(out["top"], order[:, :shown])
        assert torch.equal(out["top_probability"], expected[:, :shown])
        assert torch.equal(out["predicted"], order[:, 0]) and torch.equal(out["probability"], expected[:, 0])
        assert torch.equal(out["label"], labels)


@pytest.mark.hparams_outside_cli
@pytest.mark.parametrize("classes", [3, 1])
def test_the_test_summary_counts_each_class_and_only_the_runs_classes(classes: int) -> None:
    # The labels are the network's own answers, except that class 0 keeps one image (a class of one image scores
    # 1.0, not 0.5) and gives the rest to the next class, where they count as mistakes.
    torch.manual_seed(0)
    module = TransferModule(num_classes=classes).eval()
    images = noise_images(40)
    with torch.no_grad():
        answers = module(images).argmax(1)
    labels = answers.clone()
    zeros = (answers == 0).nonzero().flatten()
    labels[zeros[1:]] = 1 % classes
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(TensorDataset(images, labels), batch_size=16))
    summary = module.test_summary
    confusion = [[int(((labels == t) & (answers == p)).sum()) for p in range(classes)] for t in range(classes)]
    per_class = [confusion[c][c] / max(sum(confusion[c]), 1) for c in range(classes)]
    assert summary["confusion"] == confusion and summary["per_class_acc"] == pytest.approx(per_class, abs=1e-7)
    assert summary["test_images"] == 40 and summary["test_acc"] == pytest.approx(
        (answers == labels).float().mean().item()
    )
    assert classes == 1 or (summary["per_class_acc"][0] == 1.0 and sum(confusion[0]) == 1)


class StepLosses(L.Callback):
    """Each training step's loss, as the step returned it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


@pytest.mark.parametrize("classes", [2, 1])
def test_training_curves_are_logged_on_the_steps_the_logger_writes(classes: int, tmp_path: Path) -> None:
    # One class: every prediction is right, so each logged step's accuracy must be 1 whatever dropout does
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, classes, (24,), generator=generator)
    steps = StepLosses()
    trainer = L.Trainer(
        max_steps=6, log_every_n_steps=3, logger=CSVLogger(tmp_path), callbacks=[steps], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(TransferModule(num_classes=classes), DataLoader(TensorDataset(images, labels), batch_size=4))
    with open(next(tmp_path.glob("**/metrics.csv"))) as f:
        rows = [row for row in csv.DictReader(f) if row.get("train_loss_step")]
    assert [int(row["step"]) for row in rows] == [2, 5]  # the 3rd and 6th steps, as Lightning writes them
    assert [float(row["train_loss_step"]) for row in rows] == [steps.losses[2], steps.losses[5]]  # their own
    assert classes == 2 or all(float(row["train_acc_step"]) == 1.0 for row in rows)


@pytest.mark.hparams_outside_cli
def test_the_progress_bar_shows_training_and_validation_metrics_not_the_tests() -> None:
    images = noise_images(16)
    loader = DataLoader(TensorDataset(images, torch.arange(16) % 3), batch_size=8)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False)
    module = TransferModule(num_classes=3)
    trainer.fit(module, loader, loader)
    assert set(trainer.progress_bar_metrics) == {"train_loss", "train_acc", "val_loss", "val_acc"}
    trainer.test(module, loader, verbose=False)  # the test's numbers go to the report, not the bar
    assert not any(name.startswith("test_") for name in trainer.progress_bar_metrics)


@pytest.mark.hparams_outside_cli
def test_a_module_built_in_python_saves_a_checkpoint_that_loads_weights_only(tmp_path: Path) -> None:
    # As the notebook builds it (no LightningCLI): the optimizer is a function, which a weights-only load refuses,
    # so it stays out of the saved hyperparameters
    images = noise_images(8)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(TransferModule(num_classes=3), DataLoader(TensorDataset(images, torch.arange(8) % 3), batch_size=8))
    trainer.save_checkpoint(tmp_path / "notebook.ckpt")
    saved = load_checkpoint(tmp_path / "notebook.ckpt")["hyper_parameters"]
    assert saved["num_classes"] == 3 and "optimizer" not in saved and "lr_scheduler" not in saved


@pytest.mark.hparams_outside_cli
def test_a_scheduler_steps_once_per_epoch_unless_told_otherwise() -> None:
    images = noise_images(8)
    halve = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    module = TransferModule(num_classes=2, lr_scheduler=halve)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, DataLoader(TensorDataset(images, torch.arange(8) % 2), batch_size=2))  # 4 steps an epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.25  # Adadelta's 1.0, halved after each of 2 epochs


@pytest.mark.parametrize("layers", [1, 4])
def test_transfer_layers_takes_1_to_4(layers: int) -> None:
    assert TransferModule(transfer_layers=layers).transfer_layers == layers


@pytest.mark.parametrize("layers", [0, 5])
def test_transfer_layers_outside_1_to_4_is_a_one_line_error(layers: int) -> None:
    with pytest.raises(UserError) as err:
        TransferModule(transfer_layers=layers)
    assert str(err.value) == f"--model.transfer_layers is {layers}: give 1 to 4 (weight layers from the input)"


def test_the_model_summary_shows_each_parts_sizes_for_a_batch_of_images() -> None:
    # Lightning's summary at the start of a fit runs example_input_array through the network: two uint8 28x28 images
    summary = ModelSummary(TransferModule(num_classes=5), max_depth=1)
    sizes = dict(zip(summary.layer_names, zip(summary.in_sizes, summary.out_sizes, strict=True), strict=True))
    assert sizes["backbone"] == ([2, 1, 28, 28], [2, 4608]) and sizes["head"] == ([2, 4608], [2, 5])
    assert summary.total_flops > 0


def test_a_cpu_fit_keeps_the_backbone_channels_last_and_another_device_keeps_torchs_layout() -> None:
    def channels_last(module: TransferModule) -> bool:  # conv2's weight (64, 32, 3, 3): the two layouts differ
        return module.backbone.conv2.weight.is_contiguous(memory_format=torch.channels_last)

    images = noise_images(4)
    module = TransferModule(num_classes=2)
    assert not channels_last(module)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, DataLoader(TensorDataset(images, torch.arange(4) % 2), batch_size=4))
    assert channels_last(module)  # oneDNN's faster convolutions on the CPU (benchmarks/RESULTS.md)
    elsewhere = TransferModule(num_classes=2)
    elsewhere.use_layout_for(torch.device("cuda", 0))  # the decision only: no GPU is needed to make it
    assert not channels_last(elsewhere)
