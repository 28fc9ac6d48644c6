"""The network is the notebook's, layer for layer, and the order and form model.py writes its layers in change no
value and no gradient against Keras' order."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.model import Backbone, Head
from lit_transfer.speed.layers import ByteDropout, GradLayoutFlatten


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = Backbone(), Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def keras_order(net: Net) -> nn.Sequential:
    """The Keras model's order with the same weights: conv, ReLU, conv, ReLU, pool, flatten, dense, ReLU, dense."""
    b, h = net.backbone, net.head
    return nn.Sequential(b.conv1, nn.ReLU(), b.conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), h.fc1, nn.ReLU(), h.fc2)


def test_layers_are_named_as_in_the_notebook() -> None:
    net = Net()
    # Keras' layers, two pairs in the other order (pool before relu2, flatten before dropout: model.py says why)
    assert list(net.backbone._modules) == ["conv1", "relu1", "conv2", "pool", "relu2", "flatten", "dropout"]
    assert list(net.head._modules) == ["fc1", "relu", "dropout", "fc2"]
    assert [k for k in net.state_dict() if k.endswith("weight")] == [
        "backbone.conv1.weight",
        "backbone.conv2.weight",
        "head.fc1.weight",
        "head.fc2.weight",
    ]


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_layers_equal_the_notebook_order_bit_for_bit(channels_last: bool) -> None:
    torch.manual_seed(0)
    net = Net()
    assert isinstance(net.backbone.dropout, ByteDropout) and isinstance(net.backbone.flatten, GradLayoutFlatten)
    if channels_last:  # the weights' layout a CPU run trains in (TransferModule.setup)
        net.backbone.to(memory_format=torch.channels_last)
    ours = net.eval()  # evaluation mode: dropout is the identity in both
    reference = keras_order(net).eval()
    # MNIST-like images, plus blank and constant ones: their pooling windows are all ties, where a reordering that
    # picked another element would send the gradient elsewhere.
    images = (torch.rand(16, 1, 28, 28) > 0.7).float() * torch.rand(16, 1, 28, 28)
    images[0], images[1] = 0.0, 1.0
    if channels_last:
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


def test_features_are_the_notebook_layers_before_dropout() -> None:
    torch.manual_seed(0)
    net = Net()
    images = torch.rand(8, 1, 28, 28)
    expected = F.max_pool2d(F.relu(net.backbone.conv2(F.relu(net.backbone.conv1(images)))), 2).flatten(1)
    assert torch.equal(net.backbone.features(images), expected)  # flattened: the layout the cache stores
    assert torch.equal(net.backbone.eval()(images), expected)
    assert torch.equal(net.backbone.from_features(expected), expected)  # evaluation: dropout is the identity


def test_the_network_as_written_is_scriptable() -> None:
    # export --format torchscript scripts the network as model.py writes it (torch's own dropout and flatten
    # there, the same values in evaluation)
    torch.manual_seed(0)
    net = Net().eval()
    images = torch.rand(4, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.script; export still offers it
        scripted = torch.jit.script(net)
    assert torch.equal(scripted(images), net(images))
