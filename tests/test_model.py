"""The network is the notebook's, layer for layer: its reorderings change no value and no gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.model import Backbone, Head


def notebook_order(backbone: Backbone, head: Head) -> nn.Sequential:
    """The Keras model's order with the same weights: conv, ReLU, conv, ReLU, pool, flatten, dense, ReLU, dense."""
    conv1, conv2 = backbone[0], backbone[2]
    return nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), head[0], nn.ReLU(), head[3])


@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_and_gradients_equal_the_notebook_order_bit_for_bit(channels_last: bool) -> None:
    torch.manual_seed(0)
    backbone, head = Backbone(), Head(5)
    ours = nn.Sequential(backbone, head).eval()  # evaluation mode: dropout is the identity in both
    reference = notebook_order(backbone, head).eval()
    # MNIST-like images, plus blank and constant ones: their pooling windows are all ties, where a reordering that
    # picked another element would send the gradient elsewhere.
    images = (torch.rand(16, 1, 28, 28) > 0.7).float() * torch.rand(16, 1, 28, 28)
    images[0], images[1] = 0.0, 1.0
    if channels_last:
        ours.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 5, (16,))
    results = []
    for model in (ours, reference):
        model.zero_grad()
        logits = model(images)
        F.cross_entropy(logits, labels).backward()
        results.append((logits.detach().clone(), [p.grad.clone() for p in model.parameters()]))
    (ours_logits, ours_grads), (ref_logits, ref_grads) = results
    assert torch.equal(ours_logits, ref_logits)
    assert len(ours_grads) == len(ref_grads) == 8
    for ours_grad, ref_grad in zip(ours_grads, ref_grads, strict=True):
        assert torch.equal(ours_grad, ref_grad)
    assert any(g.abs().sum() > 0 for g in ours_grads)  # the comparison is not between zeros


def test_pooled_features_are_the_notebook_layers_before_dropout() -> None:
    torch.manual_seed(0)
    backbone = Backbone()
    images = torch.rand(8, 1, 28, 28)
    conv1, conv2 = backbone[0], backbone[2]
    expected = F.max_pool2d(F.relu(conv2(F.relu(conv1(images)))), 2)
    assert torch.equal(backbone.pooled(images), expected)
    assert torch.equal(backbone.eval()(images), expected.flatten(1))
