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
    if mode == "PA":  # a palette picture with an alpha band, every palette entry black
        indices = Image.new("P", ink.size, 0)
        indices.putpalette([0, 0, 0] * 256)
        return Image.merge("PA", (indices, ink))
    return Image.merge("LA", (black, ink))


def ink_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """The rows and columns, first and last, of the input's nonzero pixels: top, left, bottom, right."""
    ink = (image > 0).nonzero()
    (top, left), (bottom, right) = ink.min(0).values.tolist(), ink.max(0).values.tolist()
    return top, left, bottom, right


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
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
    top, left, bottom, right = ink_box(image)
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
    with pytest.raises(UserError) as err:
        to_mnist(Image.new("RGB", (50, 40), "white"))
    # what is wrong, then the fix: the line a user reads
    assert str(err.value) == "the image is blank (no ink darker or lighter than its background): draw or choose a digit"


def test_a_file_s_error_starts_with_its_name_once(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_bytes(b"not a picture")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    for name, problem in [("notes.png", " is not a readable image ("), ("blank.png", ": the image is blank (")]:
        with pytest.raises(UserError) as err:
            load_mnist(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}{problem}"), str(err.value)


@pytest.mark.parametrize("background", [127, 128])
def test_a_picture_and_its_negative_agree_at_the_middle_grey(background: int) -> None:
    # The paper's grey decides which side is ink: light paper (above 127) is inverted, dark paper (127 and below) is
    # not. So a picture and its negative always give the same input, even on paper of the middle grey.
    picture = Image.new("L", (40, 40), background)
    picture.paste(0 if background > 127 else 255, (15, 5, 25, 35))  # a bar of the opposite extreme
    negative = Image.eval(picture, lambda v: 255 - v)
    image = to_mnist(picture)
    assert torch.equal(image, to_mnist(negative))
    assert image[0, 0] == 0 and image[SIZE // 2, SIZE // 2] >= 250  # the bar is light, as MNIST's digits are


@pytest.mark.parametrize("transpose", [False, True], ids=["minus", "one"])
def test_a_stroke_running_off_the_paper_is_still_ink(transpose: bool) -> None:
    # A thick bar from edge to edge of white paper, one pixel of paper above and below it: the paper is light along
    # most of the outermost rows and columns, so the bar is the ink, cropped to exactly its 60x18 pixels.
    picture = Image.new("L", (60, 20), 255)
    picture.paste(0, (0, 1, 60, 19))
    image = to_mnist(picture.transpose(Image.Transpose.TRANSPOSE) if transpose else picture)
    top, left, bottom, right = ink_box(image)
    height, width = (BOX, 6) if transpose else (6, BOX)  # 60x18 scaled to 20x6
    assert (bottom - top + 1, right - left + 1) == (height, width)
    assert (image[top : bottom + 1, left : right + 1] == 255).all()


def test_the_crop_keeps_exactly_the_ink() -> None:
    # A 10x20 block of ink needs no scaling (its longer side is already 20): it comes out as that block, centred,
    # and a speck at the ink threshold (grey 32, not above it) in a corner is paper, so it moves nothing.
    picture = Image.new("L", (50, 50), 0)
    picture.paste(255, (7, 11, 17, 31))
    picture.putpixel((49, 49), 32)
    image = to_mnist(picture)
    assert image.sum().item() == 255 * 10 * 20
    assert (image[4:24, 9:19] == 255).all()


@pytest.mark.parametrize("transpose", [False, True], ids=["upright", "lying"])
def test_a_hairline_stays_one_pixel_wide(transpose: bool) -> None:
    # a 1x60 stroke scales to 1x20: a thin stroke is not thickened by the scaling
    picture = Image.new("L", (11, 60), 0)
    picture.paste(255, (5, 0, 6, 60))
    image = to_mnist(picture.transpose(Image.Transpose.TRANSPOSE) if transpose else picture)
    assert image.dtype == torch.uint8
    top, left, bottom, right = ink_box(image)
    assert (bottom - top + 1, right - left + 1) == ((1, BOX) if transpose else (BOX, 1))


def test_the_digit_is_scaled_with_lanczos() -> None:
    # A picture symmetric under a half turn, framed in ink so that the crop is exactly that picture and the centre of
    # mass its centre: the input is Pillow's Lanczos resize of it to 20x20, pasted 4 pixels in from each side.
    half = torch.randint(0, 256, (20, 40), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    pixels = torch.cat([half, half.flip(0).flip(1)])
    pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1] = 255, 255, 255, 255
    digit = Image.fromarray(pixels.numpy(), mode="L")
    scaled = digit.resize((BOX, BOX), Image.Resampling.LANCZOS)
    expected = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    expected[4:24, 4:24] = torch.frombuffer(bytearray(scaled.tobytes()), dtype=torch.uint8).view(BOX, BOX)
    picture = Image.new("L", (50, 50), 0)  # on dark paper
    picture.paste(digit, (5, 5))
    assert torch.equal(to_mnist(picture), expected)


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_a_digit_heavy_at_one_end_stays_whole_on_the_canvas(turn: int) -> None:
    # A mallet: a heavy head and a thin handle. Centring its mass would push the handle off the canvas, so the digit
    # is moved only as far as the canvas allows: all of its ink stays, and its far end touches the canvas' edge.
    picture = Image.new("L", (20, 40), 0)
    picture.paste(255, (0, 0, 20, 10))  # the head
    picture.paste(255, (9, 10, 11, 40))  # the handle
    picture = picture.rotate(turn, expand=True)
    image = to_mnist(picture)
    scaled = picture.resize((10, 20) if turn in (0, 180) else (20, 10), Image.Resampling.LANCZOS)
    assert image.sum().item() == sum(scaled.tobytes())  # nothing cut off
    top, left, bottom, right = ink_box(image)
    edge = {0: bottom == SIZE - 1, 180: top == 0, 90: right == SIZE - 1, 270: left == 0}[turn]  # the handle's end
    assert edge, (turn, top, left, bottom, right)
