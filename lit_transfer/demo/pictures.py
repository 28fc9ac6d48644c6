"""What the page draws: feature maps as labelled tiles, learning curves, a confusion matrix, a results table.

The feature maps are tiled with numpy rather than matplotlib: they are redrawn for every stroke, and a matplotlib
figure takes ~100 ms to render on this CPU; a colour lookup table and array slices take about a millisecond.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

COLUMNS = 8  # 32 maps as 4 rows of 8
ZOOM = 3  # screen pixels per map pixel
LABEL = 12  # pixels below each tile for its number
GAP = 4
LUT = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)  # 256 colours


def feature_tiles(maps: Tensor, scale: float) -> np.ndarray:
    """32 maps ``(32, H, W)`` as one RGB picture, 4 rows of 8, each tile numbered by its channel.

    The maps are shown after their ReLU (what the next layer reads), coloured on one scale per layer (``scale``,
    the largest value in that layer through both models), so equal maps give equal pictures.
    """
    values = maps.clamp(min=0).div(max(scale, 1e-12)).mul(255).round().clamp(0, 255).byte().numpy()
    n, h, w = values.shape
    canvas = _numbered_grid(n, h, w).copy()
    tiles = LUT[values].repeat(ZOOM, axis=1).repeat(ZOOM, axis=2)  # (n, h*ZOOM, w*ZOOM, 3), nearest-neighbour
    tile_w, tile_h = w * ZOOM + GAP, h * ZOOM + LABEL + GAP
    for i in range(n):
        x, y = (i % COLUMNS) * tile_w, (i // COLUMNS) * tile_h
        canvas[y : y + h * ZOOM, x : x + w * ZOOM] = tiles[i]
    return canvas


@functools.cache
def _numbered_grid(n: int, h: int, w: int) -> np.ndarray:
    """The white canvas with each tile's number written below its place: drawn once per layer shape."""
    rows = -(-n // COLUMNS)
    tile_w, tile_h = w * ZOOM + GAP, h * ZOOM + LABEL + GAP
    canvas = Image.new("RGB", (COLUMNS * tile_w, rows * tile_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        draw.text(((i % COLUMNS) * tile_w + 1, (i // COLUMNS) * tile_h + h * ZOOM), f"#{i}", fill="black")
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
