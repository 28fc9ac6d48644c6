"""The page's drawing pad: a plain 2D canvas in Gradio's ``gr.HTML`` (its way to add a custom widget), whose value is
the drawing as a PNG data URL, set when a stroke ends (setting it sends the change event).

Not ``gr.Sketchpad``: Gradio's image editor draws with pixi.js on WebGL and uploads three PNG layers per stroke; in
headless Chromium on this 2-core CPU (software WebGL) that took ~1.1 s from the end of a stroke to the answer, ~0.65 s
of it before any request left the browser (benchmarks/RESULTS.md). A 2D canvas's ``toDataURL`` takes milliseconds.
Pointer events serve mouse, pen and touch alike.
"""

from __future__ import annotations

import base64
import binascii
import io

import gradio as gr
from PIL import Image, UnidentifiedImageError

from lit_transfer.errors import UserError

HTML = """
<div class="pad">
  <canvas width="${size}" height="${size}" role="img" aria-label="drawing pad"></canvas>
  <button type="button" class="clear">Clear</button>
</div>
"""
CSS = """
.pad { display: flex; flex-direction: column; align-items: center; gap: 8px; }
canvas { width: ${size}px; height: ${size}px; border: 1px solid var(--border-color-primary);
         border-radius: var(--radius-lg); cursor: crosshair; touch-action: none; background: white; }
.clear { padding: 2px 14px; border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg); }
"""
JS = """
const canvas = element.querySelector('canvas');
const ctx = canvas.getContext('2d');
const blank = () => { ctx.fillStyle = 'white'; ctx.fillRect(0, 0, canvas.width, canvas.height); };
const pen = () => {
  ctx.lineCap = 'round'; ctx.lineJoin = 'round'; ctx.strokeStyle = 'black'; ctx.lineWidth = props.stroke;
};
blank();
let drawing = false;
const at = (e) => {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
};
canvas.addEventListener('pointerdown', (e) => {
  drawing = true;
  canvas.setPointerCapture(e.pointerId);
  pen();
  ctx.beginPath();
  ctx.moveTo(...at(e));
  ctx.lineTo(...at(e));
  ctx.stroke();
});
canvas.addEventListener('pointermove', (e) => {
  if (!drawing) return;
  ctx.lineTo(...at(e));
  ctx.stroke();
});
const done = () => {
  if (!drawing) return;
  drawing = false;
  props.value = canvas.toDataURL('image/png');
};
canvas.addEventListener('pointerup', done);
canvas.addEventListener('pointercancel', done);
element.querySelector('.clear').addEventListener('click', () => {
  blank();
  props.value = '';
});
"""


def drawing_pad(size: int = 280, stroke: int = 22, elem_id: str | None = None) -> gr.HTML:
    """A square canvas to draw a digit on in black on white; its value: the drawing as a PNG data URL ('' if none).

    Args:
        size: The canvas' side in pixels.
        stroke: The pen's width in pixels (22 of 280: about MNIST's stroke once scaled to its 20-pixel box).
        elem_id: The element's id in the page.
    """
    # A configured gr.HTML rather than a subclass: Gradio writes a .pyi stub beside any module that subclasses
    # one of its components, i.e. into the installed package.
    return gr.HTML(
        value="",
        html_template=HTML,
        css_template=CSS,
        js_on_load=JS,
        elem_id=elem_id,
        size=size,
        stroke=stroke,
    )


def decode(value: str) -> Image.Image:
    """The drawing pad's value as an image; a value that is not a PNG or JPEG data URL is a ``UserError``."""
    header, _, data = value.partition(",")
    if header not in ("data:image/png;base64", "data:image/jpeg;base64"):
        raise UserError("the drawing did not arrive as an image (expected a PNG data URL): draw again")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.load()
            return image.copy()
    except (binascii.Error, UnidentifiedImageError, OSError) as err:
        raise UserError(f"the drawing could not be read ({err}): draw again") from None
