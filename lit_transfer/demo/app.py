"""The page (Gradio Blocks): draw or drop a digit, see both stages' answers and the frozen features they share.

Tab "Try a digit": the 28x28 input the networks get, each stage's class probabilities, and conv1's and conv2's 32
maps computed through each model, with whether they came out identical (``torch.equal``). One tab per stage's run:
its learning curves, confusion matrix and results. Checkpoints can be switched on the page; each browser session
keeps its own choice (``gr.State``), the loaded networks are shared.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio reads it: no telemetry, no update check

import gradio as gr
import torch

from lit_transfer.demo import views
from lit_transfer.demo.drawing import decode, drawing_pad
from lit_transfer.demo.inference import SHARED_LAYERS, Model, load_model, run
from lit_transfer.demo.pictures import PictureFiles, feature_tiles
from lit_transfer.demo.runs import find_checkpoints
from lit_transfer.demo.teach_tab import TeachTab
from lit_transfer.errors import UserError
from lit_transfer.images.rule import load_mnist, to_mnist

STAGES = ("source", "target")
CSS = """
#input28 img {  /* the 28x28 input, filling its box and not blurred (Gradio shows small images at their size) */
  image-rendering: pixelated; object-fit: contain !important; width: 100% !important; height: 100% !important;
}
"""


class Demo:
    """The page and the networks behind it; ``blocks`` is the Gradio app."""

    def __init__(self, source: Model, target: Model, runs_root: str | Path = "runs") -> None:
        self.models = {str(source.path): source, str(target.path): target}
        self.lock = threading.Lock()  # the networks and their forward hooks serve one request at a time
        self.pictures = PictureFiles()  # pictures handed to Gradio as whole files (pictures.py says why)
        self.start = {"source": str(source.path), "target": str(target.path)}
        found = find_checkpoints(runs_root) if Path(runs_root).is_dir() else []
        known = {str(source.path), str(target.path), *(str(f.path) for f in found)}
        self.choices = sorted(known)
        self.blocks = self._build()

    # --- handlers -------------------------------------------------------------------------------------
    def model(self, path: str) -> Model:
        if path not in self.models:
            self.models[path] = load_model(path)
        return self.models[path]

    def on_draw(self, drawing: str | None, state: dict[str, Any]) -> dict:
        if not drawing:  # cleared
            return self.failed(state, "Draw a digit with the mouse (or a finger), or drop an image file.")
        return self.answer(state, lambda: to_mnist(decode(drawing)), "your drawing")

    def on_file(self, path: str | None, state: dict[str, Any]) -> dict:
        if not path:
            return self.failed(state, "Drop an image file (PNG, JPEG, ...), or draw a digit.")
        name = Path(path).name

        def read() -> torch.Tensor:
            try:
                return load_mnist(path)
            except UserError as err:  # named as the user knows it, not by Gradio's temporary copy
                raise UserError(str(err).replace(str(path), name)) from None

        # the upload box emptied again, ready for the next file (the message names this one)
        return {**self.answer(state, read, f"`{name}`"), self.file: None}

    def on_checkpoint(self, which: str, path: str | None, state: dict[str, Any]) -> dict:
        if not path or path == state[which]:  # e.g. the picker set back after a refusal
            return {self.checkpoint_message: gr.skip()}  # (an empty dict would read as one output value)
        try:
            with self.lock:
                self.model(path)  # loaded and checked before the session switches to it
        except UserError as err:  # the session keeps the checkpoint it had, and the picker shows it again
            return {self.checkpoint_message: f"⚠️ **Not loaded:** {err}", self.pickers[which]: state[which]}
        state = {**state, which: path}
        updates = {self.state: state, self.checkpoint_message: f"Loaded `{path}`.", **self.run_views(state)}
        if state.get("image") is not None:
            updates |= self.answer(state, lambda: torch.from_numpy(state["image"]), "the last input")
        else:
            updates |= self.headings(state)
        return updates

    def on_load(self, state: dict[str, Any]) -> dict:
        return {**self.run_views(state), **self.headings(state)}

    def answer(self, state: dict[str, Any], make_input, what: str) -> dict:
        """Everything on the first tab for one image, or the error on the page and the outputs cleared."""
        start = time.perf_counter()
        try:
            image = make_input()
            with self.lock:
                source, target = self.model(state["source"]), self.model(state["target"])
                outs = {"source": run(source, image), "target": run(target, image)}
        except UserError as err:
            return self.failed(state, f"⚠️ {err}")
        updates = {
            self.state: {**state, "image": image.numpy()},
            self.input: self.pictures(image.numpy()),
            self.features_note: views.features_note(outs["source"], outs["target"]),
        }
        for stage, model in (("source", source), ("target", target)):
            names = model.names
            updates[self.probs[stage]] = gr.Label(
                {n: float(p) for n, p in zip(names, outs[stage].probabilities, strict=True)},
                label=views.stage_title(stage, model),
            )
            p, i = outs[stage].probabilities.max(0)
            updates[self.top[stage]] = f"Prediction: **{names[int(i)]}**, probability **{float(p):.3f}**"
        for layer in SHARED_LAYERS:
            scale = max(float(outs[s].maps[layer].max()) for s in STAGES)  # one colour scale per layer
            for stage in STAGES:
                updates[self.maps[layer, stage]] = self.pictures(feature_tiles(outs[stage].maps[layer], scale))
        ms = 1000 * (time.perf_counter() - start)
        updates[self.message] = f"Input: {what}, as the 28x28 image the networks read (computed in {ms:.0f} ms)."
        return updates

    def failed(self, state: dict[str, Any], message: str) -> dict:
        cleared = {self.input: None, self.features_note: "", self.message: message, **self.headings(state)}
        cleared |= {self.top[s]: "" for s in STAGES} | {m: None for m in self.maps.values()}
        return cleared

    def headings(self, state: dict[str, Any]) -> dict:
        """The probability panels, empty, titled with the current checkpoints' classes."""
        return {self.probs[s]: gr.Label(None, label=views.stage_title(s, self.model(state[s]))) for s in STAGES}

    def run_views(self, state: dict[str, Any]) -> dict:
        updates = {}
        for stage in STAGES:
            header, curves, confusion, table = views.run_view(stage, self.model(state[stage]))
            updates |= {
                self.run_header[stage]: header,
                self.curves[stage]: curves,
                self.confusion[stage]: confusion,
                self.results[stage]: table,
            }
        return updates

    # --- layout ---------------------------------------------------------------------------------------
    def _build(self) -> gr.Blocks:
        start = {**self.start, "image": None}
        with gr.Blocks(title="lit_transfer: see the transfer", analytics_enabled=False, delete_cache=(600, 3600)) as b:
            self.state = gr.State(start)
            gr.Markdown(views.INTRO)
            with gr.Accordion("Checkpoints", open=False, elem_id="checkpoints-accordion"):
                with gr.Row():
                    self.pickers = {
                        stage: gr.Dropdown(
                            self.choices,
                            value=self.start[stage],
                            label=views.STAGE_NAMES[stage] + "'s checkpoint (or type a path)",
                            allow_custom_value=True,
                            elem_id=f"{stage}-ckpt",
                        )
                        for stage in STAGES
                    }
                self.checkpoint_message = gr.Markdown(elem_id="checkpoint-message")
            with gr.Tabs():
                with gr.Tab("Try a digit", id="try"):
                    self._try_tab()
                with gr.Tab("Teach new symbols", id="teach"):
                    self.teach = TeachTab(self.state, self.pictures)
                for stage in STAGES:
                    with gr.Tab(f"{views.STAGE_NAMES[stage]}'s run", id=f"{stage}-run"):
                        self._run_tab(stage)
            outputs = self.output_components()
            # always_last: strokes that come while an answer is computed are answered once, with the latest drawing
            self.draw.change(
                self.on_draw,
                [self.draw, self.state],
                outputs,
                api_name="predict_drawing",
                show_progress="hidden",
                trigger_mode="always_last",
            )
            self.file.upload(
                self.on_file,
                [self.file, self.state],
                [*outputs, self.file],
                api_name="predict_file",
                show_progress="hidden",
            )
            for stage, picker in self.pickers.items():
                picker.change(
                    lambda path, state, stage=stage: self.on_checkpoint(stage, path, state),
                    [picker, self.state],
                    [*outputs, picker, self.checkpoint_message, *self.run_components()],
                    api_visibility="private",
                    show_progress="minimal",  # not the whole page greyed while a checkpoint loads
                )
            b.load(
                self.on_load,
                [self.state],
                [*self.run_components(), *self.probs.values()],
                api_visibility="private",
            )
        return b

    def _try_tab(self) -> None:
        with gr.Row():
            with gr.Column(), gr.Tabs():
                with gr.Tab("Draw"):
                    self.draw = drawing_pad(elem_id="draw")
                with gr.Tab("Upload an image"):
                    self.file = gr.File(label="An image file", file_types=["image"], elem_id="upload")
            with gr.Column():
                self.input = gr.Image(
                    label="The networks' input (28x28, after the same image rule as predict)",
                    format="png",  # lossless: this is the exact input, and it can be downloaded as such
                    image_mode="L",
                    height=280,
                    buttons=["download", "fullscreen"],
                    interactive=False,
                    elem_id="input28",
                )
                self.message = gr.Markdown(views.START_MESSAGE, elem_id="message")
        with gr.Row():
            self.probs, self.top = {}, {}
            for stage in STAGES:
                with gr.Column():
                    self.probs[stage] = gr.Label(label=views.STAGE_NAMES[stage], elem_id=f"{stage}-probs")
                    self.top[stage] = gr.Markdown(elem_id=f"{stage}-top")
        self.features_note = gr.Markdown(elem_id="features-note")
        self.maps = {}
        for layer in SHARED_LAYERS:
            size = views.MAP_SIZES[layer]
            gr.Markdown(f"#### {layer}: its 32 feature maps ({size}, after ReLU), numbered #0 to #31")
            with gr.Row():
                for stage in STAGES:
                    with gr.Column():
                        gr.Markdown(f"{layer} computed through **{views.STAGE_NAMES[stage].lower()}'s** network")
                        self.maps[layer, stage] = gr.Image(
                            show_label=False,  # captioned above: a label would cover the first tiles' numbers
                            format="png",
                            interactive=False,
                            buttons=["fullscreen"],
                            elem_id=f"{layer}-{stage}",
                        )

    def _run_tab(self, stage: str) -> None:
        if not hasattr(self, "run_header"):
            self.run_header, self.curves, self.confusion, self.results = {}, {}, {}, {}
        self.run_header[stage] = gr.Markdown(elem_id=f"{stage}-run-header")
        self.curves[stage] = gr.Plot(label="Learning curves", elem_id=f"{stage}-curves")
        with gr.Row():
            self.confusion[stage] = gr.Plot(label="Confusion matrix (test set)", elem_id=f"{stage}-confusion")
            self.results[stage] = gr.Markdown(elem_id=f"{stage}-results")

    def output_components(self) -> list[gr.components.Component]:
        return [
            self.state,
            self.input,
            self.message,
            self.features_note,
            *self.probs.values(),
            *self.top.values(),
            *self.maps.values(),
        ]

    def run_components(self) -> list[gr.components.Component]:
        return [d[s] for d in (self.run_header, self.curves, self.confusion, self.results) for s in STAGES]

    def launch(self, host: str, port: int) -> None:
        """Serve the page on ``host:port`` from a background thread; returns once it accepts connections."""
        self.blocks.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            quiet=True,
            ssr_mode=False,
            mcp_server=False,
            css=CSS,
            run_history=False,  # it would keep calls in the browser and offer to upload them to Hugging Face
            footer_links=["api", "gradio", "settings"],
            prevent_thread_lock=True,
        )
