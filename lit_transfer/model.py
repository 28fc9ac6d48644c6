"""The notebook's CNN as plain ``nn.Module``s: a convolutional backbone and a dense head.

Layer for layer the Keras model of ``mnist_transfer_cnn.py``:
features Conv(1->32, 3x3, valid) -> ReLU -> Conv(32->32, 3x3) -> ReLU -> MaxPool 2x2 -> Dropout 0.25 -> Flatten,
classifier Linear(4608->128) -> ReLU -> Dropout 0.5 -> Linear(128->k). Dropout and flatten are drop-in
subclasses from ``layers.py``: the same computation, cheaper on the CPU. Two reorderings that change no value and
no gradient (``tests/test_model.py`` checks the network against the notebook's order bit for bit, dropout off;
``tests/test_layers.py`` and ``tests/test_speed_paths.py`` the dropout and flatten themselves):
- the backbone pools before its second ReLU: a maximum commutes with ReLU exactly (both are monotone, and pooling
  picks the same element), and ReLU then runs, forward and backward, on a quarter of the elements;
- it flattens before its dropout (an elementwise mask commutes with a reshape): the mask is then drawn over a plain
  (N, 4608) tensor whatever layout the convolutions use, so images and cached features get the same mask without
  a layout conversion.
"""

from torch import Tensor, nn

from lit_transfer.layers import ByteDropout, GradLayoutFlatten

FEATURE_SHAPE = (32, 12, 12)  # 28 -> 26 -> 24 after two valid 3x3 convs, -> 12 after 2x2 pooling
FEATURE_DIM = 32 * 12 * 12  # 4608, the flattened feature vector the head reads

# Backbone layers up to (not including) its flatten and dropout: their output is what a frozen backbone can cache.
# Flatten and dropout are applied on the fly, so a cached run keeps the notebook's semantics.
DETERMINISTIC_PREFIX = 5


class Backbone(nn.Sequential):
    """The convolutional "feature" layers (9,568 parameters)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3),
            nn.MaxPool2d(2),
            nn.ReLU(),
            GradLayoutFlatten(),
            ByteDropout(0.25),
        )

    def pooled(self, x: Tensor) -> Tensor:
        """Output of the deterministic layers (conv, ReLU, conv, pooling, ReLU): shape ``(N, 32, 12, 12)``."""
        for layer in list(self)[:DETERMINISTIC_PREFIX]:
            x = layer(x)
        return x

    def from_pooled(self, pooled: Tensor) -> Tensor:
        """The remaining layers (flatten, dropout) applied to :meth:`pooled`'s output."""
        for layer in list(self)[DETERMINISTIC_PREFIX:]:
            pooled = layer(pooled)
        return pooled


class Head(nn.Sequential):
    """The dense "classification" layers (590,597 parameters for 5 classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            nn.Linear(FEATURE_DIM, 128),
            nn.ReLU(),
            ByteDropout(0.5),
            nn.Linear(128, num_classes),
        )

    @property
    def num_classes(self) -> int:
        return self[-1].out_features


def weight_layers(backbone: Backbone, head: Head) -> list[nn.Module]:
    """The layers with weights, input to output: conv1, conv2, fc1, fc2 (Yosinski et al.'s "first n layers")."""
    return [m for m in (*backbone, *head) if any(True for _ in m.parameters(recurse=False))]
