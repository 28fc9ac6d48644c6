"""The LightningModule's own choices, in process and quick: the notebook's optimizer as Keras runs it."""

from __future__ import annotations

import math

import torch

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
