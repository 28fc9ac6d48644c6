"""Any image as the network's input: one 28x28 grey uint8 image, light digit on a dark background, as in MNIST.

One rule for every image that enters lit_transfer (image folders, ``predict`` on files, the demo page):

- An image that already is 28x28 with one channel (Pillow modes ``L``, ``1``, ``P`` with a grey palette ...
  decoded to ``L``) is used exactly as it is: a folder written from MNIST's own IDX files gives the same tensors.
- Any other image goes through the recipe of the MNIST paper (LeCun et al.: "normalized to fit in a 20x20 pixel box
  while preserving their aspect ratio ... centered in a 28x28 image by computing the center of mass"):
  1. grey (transparent pixels count as the background: composited onto white, as a drawing on paper);
  2. inverted when the background is light (MNIST digits are light on dark), judged by the border pixels;
  3. cropped to the ink (pixels brighter than ``INK`` after inversion);
  4. the longer side scaled to 20 pixels, keeping the aspect ratio (antialiased);
  5. pasted into 28x28 so that the centre of mass of the ink sits at the centre.

Written by hand because torchvision's transforms resize and crop but have no centre-of-mass placement, and
MNIST's own preprocessing was never published as code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lit_transfer.errors import UserError

SIZE = 28  # the network's input
BOX = 20  # the longer side of the digit inside it
INK = 32  # grey level (0-255, after inversion) above which a pixel counts as ink when cropping


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully (a truncated file fails here, not later); a one-line error names the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()  # a palette picture stays one: to_grey reads its transparency
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path} is not a readable image ({err}): replace or remove the file") from None


def is_mnist_like(image: Image.Image) -> bool:
    """28x28 with a single channel: used exactly as it is."""
    return image.size == (SIZE, SIZE) and image.mode in ("L", "1", "I;16", "I", "F")


def to_grey(image: Image.Image) -> Image.Image:
    """Grey, with transparent pixels as white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return image.convert("L")


def to_mnist(image: Image.Image) -> Tensor:
    """``image`` as a uint8 tensor of shape (28, 28) by the rule above; a blank image is a ``UserError``."""
    if is_mnist_like(image):
        return torch.frombuffer(bytearray(image.convert("L").tobytes()), dtype=torch.uint8).view(SIZE, SIZE).clone()
    grey = to_grey(image)
    pixels = _tensor(grey)
    border = torch.cat([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).float()
    if border.median() > 127:  # a light background: MNIST's digits are light on dark
        grey = ImageOps.invert(grey)
        pixels = 255 - pixels
    ink = (pixels > INK).nonzero()
    if len(ink) == 0:
        raise UserError("the image is blank (no ink darker or lighter than its background): draw or choose a digit")
    top, left = ink.min(0).values.tolist()
    bottom, right = ink.max(0).values.tolist()
    digit = grey.crop((left, top, right + 1, bottom + 1))
    scale = BOX / max(digit.size)
    size = (max(1, round(digit.width * scale)), max(1, round(digit.height * scale)))
    digit = _tensor(digit.resize(size, Image.Resampling.LANCZOS)).float()
    # centre of mass of the scaled digit, placed at the centre of the 28x28 canvas
    total = digit.sum().clamp(min=1e-6)
    rows, cols = torch.arange(digit.shape[0]).float(), torch.arange(digit.shape[1]).float()
    com_y, com_x = (digit.sum(1) * rows).sum() / total, (digit.sum(0) * cols).sum() / total
    y0, x0 = round(SIZE / 2 - 0.5 - com_y.item()), round(SIZE / 2 - 0.5 - com_x.item())
    y0, x0 = min(max(y0, 0), SIZE - digit.shape[0]), min(max(x0, 0), SIZE - digit.shape[1])
    canvas = torch.zeros(SIZE, SIZE)
    canvas[y0 : y0 + digit.shape[0], x0 : x0 + digit.shape[1]] = digit
    return canvas.round().clamp(0, 255).to(torch.uint8)


def load_mnist(path: str | os.PathLike) -> Tensor:
    """An image file as the network's input (28x28 uint8); errors name the file."""
    try:
        return to_mnist(open_image(path))
    except UserError as err:
        if str(path) in str(err):
            raise
        raise UserError(f"{Path(path)}: {err}") from None


def _tensor(grey: Image.Image) -> Tensor:
    return torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(grey.height, grey.width)
