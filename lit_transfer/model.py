"""The notebook's CNN as plain ``nn.Module``s: a convolutional backbone and a dense head.

Layer for layer the Keras model of ``mnist_transfer_cnn.py``, with the same layer names in the checkpoint
(``backbone.conv1.weight``, ``head.fc2.bias``, ...)::

    feature_layers         Conv2D(32, 3x3) ReLU  Conv2D(32, 3x3) ReLU  MaxPooling2D(2x2)  Dropout(0.25)  Flatten
    classification_layers  Dense(128) ReLU  Dropout(0.5)  Dense(num_classes)

Two pairs of those layers are written in the other order, and the two dropouts and the flatten in a faster form
for the CPU: each computes the same values and gradients as Keras' order (``tests/test_model.py`` checks it bit for
bit, and benchmarks/RESULTS.md has what it saves); ``lit_transfer/speed/layers.py`` says why each form is exact.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from lit_transfer.speed.layers import ByteDropout, GradLayoutFlatten

FEATURE_DIM = 32 * 12 * 12  # 4608: 28 -> 26 -> 24 after two valid 3x3 convs, -> 12 after 2x2 pooling; 32 channels
WEIGHT_LAYERS = ("conv1", "conv2", "fc1", "fc2")  # input to output: Yosinski et al.'s "first n layers"


def to_input(images: Tensor) -> Tensor:
    """uint8 images ``(N, 28, 28)`` -> float ``(N, 1, 28, 28)`` in [0, 1] (the notebook's ``x_train /= 255``)."""
    return images.unsqueeze(1).float().div_(255)


class Backbone(nn.Sequential):
    """The convolutional "feature" layers (9,568 parameters; 9,696 with BatchNorm)."""

    def __init__(self, batch_norm: bool = False) -> None:
        """
        Args:
            batch_norm: A BatchNorm after each convolution (``bn1``, ``bn2``), as almost every real backbone has;
                the notebook's network has none.
        """
        norm = (lambda name: {name: nn.BatchNorm2d(32)}) if batch_norm else (lambda name: {})
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(1, 32, kernel_size=3),
                **norm("bn1"),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(32, 32, kernel_size=3),
                **norm("bn2"),  # before the pooling: a maximum commutes with ReLU, not with a negative scale
                # Keras: ReLU, then pool. Pooling first gives the same values (a maximum commutes with ReLU), and
                # the ReLU then runs, forward and backward, on a quarter of the elements.
                pool=nn.MaxPool2d(2),
                relu2=nn.ReLU(),
                # Keras: dropout, then flatten. An elementwise mask commutes with a reshape; flattening first draws
                # the mask over a plain (N, 4608) tensor, the layout the cached features are stored in.
                flatten=GradLayoutFlatten(),
                dropout=ByteDropout(0.25),  # nn.Dropout with a cheaper CPU mask
            )
        )

    def features(self, x: Tensor) -> Tensor:
        """The layers before the dropout, which depend on the weights alone: flattened ``(N, 4608)``. While the
        backbone is frozen they give the same output in every epoch, so stage two computes them once
        (``lit_transfer/callbacks/feature_cache.py``) and trains on :meth:`from_features`."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    def from_features(self, features: Tensor) -> Tensor:
        """The rest of the backbone (its dropout) applied to :meth:`features`' output."""
        return self.dropout(features)


class Head(nn.Sequential):
    """The dense "classification" layers (590,597 parameters for 5 classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            OrderedDict(
                fc1=nn.Linear(FEATURE_DIM, 128),
                relu=nn.ReLU(),
                dropout=ByteDropout(0.5),  # nn.Dropout with a cheaper CPU mask
                fc2=nn.Linear(128, num_classes),
            )
        )

    @property
    def num_classes(self) -> int:
        return self.fc2.out_features


def count_params(module: nn.Module) -> dict[str, int]:
    """Parameters in all, trainable and frozen (``requires_grad`` off)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"total_params": trainable + frozen, "trainable_params": trainable, "frozen_params": frozen}


def weight_layers(backbone: Backbone, head: Head) -> list[nn.Module]:
    """The layers with weights, input to output: conv1, conv2, fc1, fc2."""
    return [backbone.conv1, backbone.conv2, head.fc1, head.fc2]


def has_batch_norm(state_dict: dict[str, Tensor]) -> bool:
    """Whether the weights (a checkpoint's, an export's) are those of a backbone with BatchNorm layers."""
    return "backbone.bn1.weight" in state_dict


def norm_layers(backbone: Backbone, depth: int = 2) -> list[nn.Module]:
    """The BatchNorm layers of the first ``depth`` convolutions (none without ``batch_norm``)."""
    return [getattr(backbone, f"bn{i}") for i in range(1, min(depth, 2) + 1) if hasattr(backbone, f"bn{i}")]
