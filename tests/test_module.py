"""The LightningModule's own choices, in process and quick: the notebook's optimizer as Keras runs it, what
``predict`` reports per image, and the test's per-class summary."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.module import TransferModule, keras_adadelta


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
    images = torch.randint(0, 256, (6, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
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


@pytest.mark.parametrize("classes", [3, 1])
def test_the_test_summary_counts_each_class_and_only_the_runs_classes(classes: int) -> None:
    # The labels are the network's own answers, except that class 0 keeps one image (a class of one image scores
    # 1.0, not 0.5) and gives the rest to the next class, where they count as mistakes.
    torch.manual_seed(0)
    module = TransferModule(num_classes=classes).eval()
    images = torch.randint(0, 256, (40, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
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
