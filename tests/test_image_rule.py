"""The image rule (lit_transfer/images/rule.py): any picture as the 28x28 input an MNIST network expects, checked
on pictures whose right answer is known without the rule's code."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from symbols import picture, strokes

from lit_transfer.errors import UserError
from lit_transfer.images.rule import BOX, SIZE, load_mnist, to_mnist


def drawing(seed: int = 0) -> Image.Image:
    return picture(strokes("plus", random.Random(seed)))  # black strokes on white, 280x280 RGB


def with_alpha(mode: str, seed: int = 0) -> Image.Image:
    """The same drawing with transparent paper, in ``mode``: black ink, opaque; the paper's colour black too, as many
    programs store fully transparent pixels, so only its transparency makes it paper."""
    ink = Image.eval(drawing(seed).convert("L"), lambda v: 255 - v)  # the ink's opacity
    black = Image.new("L", ink.size, 0)
    if mode == "RGBA":
        return Image.merge("RGBA", (black, black, black, ink))
    return Image.merge("LA", (black, ink))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_paper_counts_as_white(mode: str) -> None:
    # Transparent pixels are the paper a drawing was made on: the same input as the drawing on white.
    assert torch.equal(to_mnist(with_alpha(mode)), to_mnist(drawing()))


def test_a_palette_picture_with_a_transparent_colour_counts_it_as_white(tmp_path: Path) -> None:
    # A GIF-like picture: its palette's background entry is transparent (and black, as a PNG or GIF may store it).
    grey = drawing().convert("L")
    palette = grey.point(lambda v: 0 if v < 128 else 1).convert("P")
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # ink and background both black in RGB ...
    palette.info["transparency"] = 1  # ... the background transparent
    opaque = grey.point(lambda v: 0 if v < 128 else 255)
    assert torch.equal(to_mnist(palette), to_mnist(opaque))
    palette.save(tmp_path / "scan.png")
    assert torch.equal(load_mnist(tmp_path / "scan.png"), to_mnist(opaque))


@pytest.mark.parametrize("mode", ["1", "I;16", "I", "F"])
def test_any_one_channel_28x28_picture_is_used_as_it_is(mode: str) -> None:
    # bilevel, 16-bit, 32-bit integer or float grey: MNIST's own size and a single channel, so no recipe
    pixels = torch.randint(0, 256, (SIZE, SIZE), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy(), mode="L").convert(mode)
    expected = torch.frombuffer(bytearray(image.convert("L").tobytes()), dtype=torch.uint8).view(SIZE, SIZE)
    assert torch.equal(to_mnist(image), expected)


def test_an_mnist_like_picture_is_used_exactly_as_it_is() -> None:
    pixels = torch.randint(0, 256, (SIZE, SIZE), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy(), mode="L")
    assert torch.equal(to_mnist(image), pixels)
    # the same pixels in another size or with colour are not MNIST's: they go through the recipe
    assert not torch.equal(to_mnist(image.convert("RGB")), pixels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_digit_fits_a_20_pixel_box_centred_by_its_mass(seed: int) -> None:
    image = to_mnist(drawing(seed)).float()
    ink = (image > 0).nonzero()
    (top, left), (bottom, right) = ink.min(0).values.tolist(), ink.max(0).values.tolist()
    assert max(bottom - top, right - left) + 1 in (BOX, BOX + 1)  # the longer side: 20 (antialiasing may spill)
    rows, cols = torch.arange(SIZE).float(), torch.arange(SIZE).float()
    centre = ((image.sum(1) * rows).sum() / image.sum(), (image.sum(0) * cols).sum() / image.sum())
    assert all(abs(c - (SIZE / 2 - 0.5)) <= 0.5 for c in centre), centre


def test_light_on_dark_and_dark_on_light_give_the_same_input() -> None:
    light_paper = drawing()
    dark_paper = Image.eval(light_paper, lambda v: 255 - v)
    assert torch.equal(to_mnist(light_paper), to_mnist(dark_paper))
    assert to_mnist(light_paper)[0, 0] == 0  # MNIST's digits are light on a dark background


def test_a_blank_picture_is_a_user_error() -> None:
    with pytest.raises(UserError, match="blank"):
        to_mnist(Image.new("RGB", (50, 40), "white"))
