"""What the page draws: feature maps as labelled tiles, learning curves, a confusion matrix, a results table.

The feature maps are tiled with numpy rather than matplotlib: they are redrawn for every stroke, and a matplotlib
figure takes ~100 ms to render on this CPU; array slices into a palette picture take about a millisecond.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from lit_transfer.files import atomic_write


class PictureFiles:
    """The page's pictures as PNG files, each written once, atomically, under a name made from its content.

    Why not hand Gradio the picture itself: Gradio 6.31 writes a returned picture into its cache under a name made
    from its content by truncating and rewriting that file in place (``processing_utils.save_pil_to_cache``). Two
    answers with the same picture (the same image asked twice at once, or conv1 through both networks, which share
    it) then rewrite the file while a client downloads it, and the client gets 0 of its bytes (issue 37;
    tests/test_demo.py's concurrent test). A file path is copied into Gradio's cache under a temporary name and
    renamed (``save_file_to_cache``), and never rewritten once there.
    """

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="lit_transfer-pictures-")  # in the temp dir Gradio serves

    def __call__(self, picture: Image.Image | np.ndarray) -> str:
        if isinstance(picture, np.ndarray):
            picture = Image.fromarray(picture)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = Path(self.folder.name) / f"{hashlib.sha256(data).hexdigest()}.png"
        if not path.exists():  # the same picture again: the file already holds it, whole
            atomic_write(path, data, durable=False)  # a page's pictures: rebuilt after a crash, no fsync wait
        return str(path)


COLUMNS = 8  # 32 maps as 4 rows of 8
ZOOM = 3  # screen pixels per map pixel
LABEL = 12  # pixels below each tile for its number
GAP = 4
# A palette picture: 254 colours of the colour map, then white (background) and black (numbers). One byte per pixel
# makes its PNG ~10x faster to encode than RGB (7.6 vs 75 ms for a 656x376 picture of noise, this CPU, loaded).
LEVELS = 254
WHITE, BLACK = LEVELS, LEVELS + 1
PALETTE = [
    *(colormaps["magma"](np.linspace(0, 1, LEVELS))[:, :3] * 255).round().astype(np.uint8).ravel().tolist(),
    *(255, 255, 255),
    *(0, 0, 0),
]


def feature_tiles(maps: Tensor, scale: float) -> Image.Image:
    """32 maps ``(32, H, W)`` as one picture, 4 rows of 8, each tile numbered by its channel.

    The maps are shown after their ReLU (what the next layer reads), coloured on one scale per layer (``scale``,
    the largest value in that layer through both models), so equal maps give equal pictures.
    """
    top = LEVELS - 1
    values = maps.clamp(min=0).div(max(scale, 1e-12)).mul(top).round().clamp(0, top).byte().numpy()
    n, h, w = values.shape
    canvas = _numbered_grid(n, h, w).copy()
    tiles = values.repeat(ZOOM, axis=1).repeat(ZOOM, axis=2)  # (n, h*ZOOM, w*ZOOM), nearest-neighbour
    tile_w, tile_h = w * ZOOM + GAP, h * ZOOM + LABEL + GAP
    for i in range(n):
        x, y = (i % COLUMNS) * tile_w, (i // COLUMNS) * tile_h
        canvas[y : y + h * ZOOM, x : x + w * ZOOM] = tiles[i]
    picture = Image.fromarray(canvas)
    picture.putpalette(PALETTE)  # "L" -> "P": the bytes are palette indices
    return picture


@functools.cache
def _numbered_grid(n: int, h: int, w: int) -> np.ndarray:
    """The white canvas with each tile's number written below its place: drawn once per layer shape."""
    rows = -(-n // COLUMNS)
    tile_w, tile_h = w * ZOOM + GAP, h * ZOOM + LABEL + GAP
    canvas = Image.new("L", (COLUMNS * tile_w, rows * tile_h), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # no antialiasing: the number's pixels are the palette's black, not in-between indices
    for i in range(n):
        draw.text(((i % COLUMNS) * tile_w + 1, (i // COLUMNS) * tile_h + h * ZOOM), f"#{i}", fill=BLACK)
    return np.asarray(canvas)


def curves_figure(curves: dict[str, list[tuple[int, float]]], title: str) -> Figure | None:
    """Loss and accuracy by epoch, training and validation; None when the run logged none."""
    if not curves:
        return None
    fig = Figure(figsize=(7, 2.8), layout="constrained")
    for ax, metric, label in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy"), strict=True):
        for split, style in (("train", "o-"), ("val", "s--")):
            points = curves.get(f"{split}_{metric}")
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, style, label="training" if split == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def confusion_figure(confusion: list[list[int]], names: list[str], title: str) -> Figure:
    """Rows: the true class, columns: the predicted class; counts written in, colour by the row's share."""
    counts = np.asarray(confusion, dtype=np.int64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 1.2 + 0.45 * len(names)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names))
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title(title)
    return fig


def results_table(results: dict[str, Any]) -> list[list[str]]:
    """The run's results.json as (what, value) rows, formatted for people."""

    def number(key: str, fmt: str) -> str:
        value = results.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    acc = results.get("test_acc")
    rows = [
        ["stage", str(results.get("stage", "-"))],
        ["dataset, classes", f"{results.get('dataset', '-')}, {', '.join(map(str, results.get('digits', [])))}"],
        ["epochs", number("epochs", "d")],
        ["training time (s)", number("train_time_s", ".1f")],
        ["images per second", number("images_per_s", ",.0f")],
        ["test accuracy", f"{100 * acc:.2f}% of {results.get('test_images', '?')}" if acc is not None else "-"],
        ["test loss", number("test_loss", ".4f")],
        ["parameters", number("total_params", ",d")],
        ["trainable", number("trainable_params", ",d")],
        ["frozen (non-trainable)", number("frozen_params", ",d")],
        ["device", str(results.get("device", "-"))],
    ]
    per_class = results.get("per_digit_acc") or {}
    rows.append(["test accuracy per class", ", ".join(f"{name}: {100 * a:.2f}%" for name, a in per_class.items())])
    return rows
