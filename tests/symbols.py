"""Symbols drawn by program, with a hand's jitter: strokes for the browser's mouse, or pictures as the drawing pad
makes them (black strokes of 22 pixels on a white 280x280 canvas). For the Teach tests and benchmarks/teach.py."""

from __future__ import annotations

import base64
import io
import math
import random

from PIL import Image, ImageDraw

# Each symbol's strokes, in units of its half-size around its centre (y down)
SHAPES = {
    "plus": [[(-1, 0), (1, 0)], [(0, -1), (0, 1)]],
    "minus": [[(-1, 0), (1, 0)]],
    "times": [[(-0.8, -0.8), (0.8, 0.8)], [(-0.8, 0.8), (0.8, -0.8)]],
    "L": [[(-0.6, -1), (-0.6, 1), (0.6, 1)]],
    "T": [[(-0.8, -1), (0.8, -1)], [(0, -1), (0, 1)]],
    "Z": [[(-0.7, -1), (0.7, -1), (-0.7, 1), (0.7, 1)]],
}


def strokes(kind: str, rng: random.Random) -> list[list[tuple[float, float]]]:
    """``kind``'s strokes as points in fractions of the canvas: moved, scaled, turned and each end shifted a little."""
    cx, cy = 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08)
    half, turn = rng.uniform(0.22, 0.34), rng.uniform(-0.25, 0.25)
    cos, sin = math.cos(turn), math.sin(turn)
    out = []
    for stroke in SHAPES[kind]:
        points = []
        for x, y in stroke:
            x, y = x + rng.uniform(-0.12, 0.12), y + rng.uniform(-0.12, 0.12)
            points.append((cx + half * (cos * x - sin * y), cy + half * (sin * x + cos * y)))
        out.append(points)
    return out


def picture(lines: list[list[tuple[float, float]]], size: int = 280, width: int = 22) -> Image.Image:
    """Strokes drawn as the page's drawing pad draws them: black, round ends, on white."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for stroke in lines:
        points = [(x * size, y * size) for x, y in stroke]
        draw.line(points, fill="black", width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill="black")
    return image


def data_url(image: Image.Image) -> str:
    """A picture as the drawing pad's value: a PNG data URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
