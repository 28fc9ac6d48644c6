"""The page's Teach tab: name new classes, draw a few examples of each, teach stage one's frozen features a new head
(and the same network from scratch, for comparison), then try both on new drawings and download the taught model.

Everything a user adds or teaches lives in their browser session's ``gr.State``: two sessions never share examples
or models. The training is ``teach.py``'s.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from lit_transfer.demo import teach
from lit_transfer.demo.drawing import decode, drawing_pad
from lit_transfer.demo.pictures import PictureFiles
from lit_transfer.demo.views import MODELS, TEACH_INTRO, accuracy, counts, gallery
from lit_transfer.errors import UserError, count
from lit_transfer.images.rule import load_mnist, to_mnist


@dataclass
class Session:
    """What one browser session has taught: the class names, both models, and the checkpoint offered."""

    names: list[str]
    models: dict[str, torch.nn.Module]  # "transferred", "scratch"
    checkpoint: Path


def class_names(text: str) -> list[str]:
    """The class names typed, comma-separated; a bad list is a ``UserError`` saying what to type."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if len(names) < 2:
        raise UserError("name at least 2 classes, separated by commas (for example: plus, minus, times)")
    if len(names) > teach.MAX_CLASSES:
        raise UserError(f"{count(len(names), 'class', 'classes')} named: teach at most {teach.MAX_CLASSES} at once")
    if len(set(names)) < len(names):
        raise UserError(f"a class is named twice in '{text}': name each class once")
    return names


class TeachTab:
    """The tab's components and handlers; built inside the page's ``gr.Blocks``. ``stages``: the page's own session
    state, whose ``source`` is the stage-one checkpoint to teach from."""

    def __init__(self, stages: gr.State, pictures: PictureFiles) -> None:
        self.stages, self.pictures = stages, pictures
        self.busy: set[str] = set()  # the sessions teaching now
        self.busy_lock = threading.Lock()
        self.folder = tempfile.TemporaryDirectory(prefix="lit_transfer-teach-")  # the checkpoints offered
        self._build()

    # --- handlers -------------------------------------------------------------------------------------
    def on_names(self, text: str, chosen: str | None) -> Any:
        names = [n.strip() for n in (text or "").split(",") if n.strip()]
        return gr.Dropdown(choices=names, value=chosen if chosen in names else (names[0] if names else None))

    def add(self, drawing: str | None, chosen: str | None, text: str, state: dict, test: bool = False) -> dict:
        """One drawing as an example of the chosen class (or as a test example, held out from teaching)."""
        if not drawing:
            return self.told("⚠️ Draw an example first (the pad is empty).")
        try:
            return self._add(state, chosen, text, [to_mnist(decode(drawing))], test)
        except UserError as err:
            return self.told(f"⚠️ {err}")

    def add_files(self, paths: list[str] | None, chosen: str | None, text: str, state: dict) -> dict:
        if not paths:
            return self.told("⚠️ Drop image files of the chosen class.")
        try:
            images = []
            for path in paths:
                try:
                    images.append(load_mnist(path))
                except UserError as err:  # named as the user knows it, not by Gradio's temporary copy
                    raise UserError(str(err).replace(str(path), Path(path).name)) from None
            return {**self._add(state, chosen, text, images, False), self.upload: None}
        except UserError as err:
            return {**self.told(f"⚠️ {err}"), self.upload: None}

    def _add(self, state: dict, chosen: str | None, text: str, images: list[torch.Tensor], test: bool) -> dict:
        names = [n.strip() for n in (text or "").split(",") if n.strip()]
        if not chosen or chosen not in names:
            raise UserError("name the classes first, then choose the class of this example")
        added = [{"name": chosen, "image": image.numpy(), "test": test} for image in images]
        state = {**state, "examples": [*state["examples"], *added]}
        what = "test example" if test else "example"
        return {
            self.state: state,
            self.gallery: [(self.pictures(picture), caption) for picture, caption in gallery(state)],
            self.message: f"Added {len(added)} {what}{'s' * (len(added) > 1)} of **{chosen}**. {counts(state, names)}",
        }

    def clear(self, state: dict) -> dict:
        state = {**state, "examples": []}
        return {self.state: state, self.gallery: [], self.message: "No examples yet."}

    def on_teach(
        self,
        text: str,
        state: dict,
        stages: dict,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 (Gradio's way to give a handler the page's progress bar)
    ):
        """Teach both models (a generator: the page shows the models before the held-out estimate is done)."""
        session = getattr(request, "session_hash", None) or "?"
        with self.busy_lock:
            if session in self.busy:
                yield self.told("⚠️ Already teaching in this page: wait until it has finished, then press Teach.")
                return
            self.busy.add(session)
        try:
            yield from self._teach(text, state, stages, progress)
        except UserError as err:
            yield self.told(f"⚠️ {err}")
        finally:
            with self.busy_lock:
                self.busy.discard(session)

    def _teach(self, text: str, state: dict, stages: dict, progress):
        names = class_names(text)
        train = [e for e in state["examples"] if not e["test"] and e["name"] in names]
        test = [e for e in state["examples"] if e["test"] and e["name"] in names]
        for name in names:
            n = sum(e["name"] == name for e in train)
            if n < teach.MIN_EXAMPLES:
                have = "no examples" if n == 0 else f"only {n} example{'s' * (n > 1)}"
                raise UserError(
                    f"class '{name}' has {have}: add at least {teach.MIN_EXAMPLES} (test examples not counted)"
                )

        def tensors(examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.stack([torch.from_numpy(e["image"]) for e in examples])
            return images, torch.tensor([names.index(e["name"]) for e in examples])

        data = teach.Examples(*tensors(train), names)
        source = stages["source"]
        report = lambda fraction, what: progress(fraction, desc=what)  # noqa: E731
        share = 0.3 if not test else 1.0  # the progress bar's part before the held-out estimate
        taught = teach.teach(data, source, progress=report, share=share)
        folder = Path(self.folder.name) / uuid.uuid4().hex  # one per teaching: a download never changes under way
        folder.mkdir()
        checkpoint = taught.save(folder / f"taught-{len(names)}-classes.ckpt")
        old = state.get("taught")
        models = {"transferred": taught.transferred.lightning_module, "scratch": taught.scratch.lightning_module}
        state = {**state, "taught": Session(names, models, checkpoint)}
        if old is not None:
            shutil.rmtree(old.checkpoint.parent, ignore_errors=True)
        done = (
            f"Taught **{', '.join(names)}** from {len(train)} examples, {teach.STEPS} steps each: transferred from "
            f"stage one `{source}` in {taught.seconds['transferred']:.1f} s, from scratch in "
            f"{taught.seconds['scratch']:.1f} s. Draw below: both answer."
        )
        cleared = {self.probs[k]: gr.Label(None, label=MODELS[k]) for k in MODELS} | {t: "" for t in self.top.values()}
        yield {
            self.state: state,
            self.message: done,
            self.download: str(checkpoint),
            self.accuracy: "Estimating each model's accuracy on examples it did not see ...",
            **cleared,
        }
        teach.held_out(taught, data, source, tensors(test) if test else None, progress=report, start=share)
        yield {self.message: done, self.download: str(checkpoint), self.accuracy: accuracy(taught)}  # all, last

    def predict(self, drawing: str | None, state: dict) -> dict:
        """Both taught models' answers for a drawing, side by side."""
        taught: Session | None = state.get("taught")
        empty = {self.probs[k]: gr.Label(None, label=MODELS[k]) for k in MODELS} | {t: "" for t in self.top.values()}
        if taught is None:
            return {**empty, self.try_message: "Teach first: name classes, add examples, press Teach."}
        if not drawing:
            return {**empty, self.try_message: "Draw one of the classes you taught."}
        try:
            image = to_mnist(decode(drawing))
        except UserError as err:
            return {**empty, self.try_message: f"⚠️ {err}"}
        updates = {self.try_message: f"Classes: {', '.join(taught.names)}."}
        for key, module in taught.models.items():
            p = teach.probabilities(module, image.unsqueeze(0))[0]
            updates[self.probs[key]] = gr.Label(
                {n: float(v) for n, v in zip(taught.names, p, strict=True)}, label=MODELS[key]
            )
            best, i = p.max(0)
            updates[self.top[key]] = f"Prediction: **{taught.names[int(i)]}**, probability **{float(best):.3f}**"
        return updates

    def told(self, message: str) -> dict:
        return {self.message: message}

    # --- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.state = gr.State({"examples": [], "taught": None})
        gr.Markdown(TEACH_INTRO)
        with gr.Row():
            with gr.Column():
                self.names = gr.Textbox(
                    label="Classes (comma-separated)", placeholder="plus, minus, times", elem_id="teach-names"
                )
                # any value allowed: an API client names the class without the page's list of choices
                self.chosen = gr.Dropdown(
                    [], label="Class of the next example", allow_custom_value=True, elem_id="teach-class"
                )
                # no inner tabs: the page's other tabs are named Draw and Upload
                self.pad = drawing_pad(elem_id="teach-draw")
                with gr.Row():
                    self.add_button = gr.Button("Add example", elem_id="teach-add")
                    self.add_test_button = gr.Button("Add as a test example", elem_id="teach-add-test")
                self.upload = gr.File(
                    label="Or drop image files of the chosen class",
                    file_count="multiple",
                    file_types=["image"],
                    elem_id="teach-upload",
                )
            with gr.Column():
                self.gallery = gr.Gallery(
                    label="Examples (as the networks see them, 28x28)", columns=8, height=260, elem_id="teach-examples"
                )
                self.clear_button = gr.Button("Remove all examples", size="sm")
                self.teach_button = gr.Button("Teach", variant="primary", elem_id="teach-button")
                self.message = gr.Markdown("No examples yet.", elem_id="teach-message")
        gr.Markdown("#### Try the taught models: draw one of your classes")
        with gr.Row():
            with gr.Column():
                self.try_pad = drawing_pad(elem_id="taught-draw")
                self.try_message = gr.Markdown(elem_id="taught-message")
            self.probs, self.top = {}, {}
            for key, title in MODELS.items():
                with gr.Column():
                    self.probs[key] = gr.Label(label=title, elem_id=f"taught-{key}")
                    self.top[key] = gr.Markdown(elem_id=f"taught-{key}-top")
        with gr.Row():
            self.accuracy = gr.Markdown(elem_id="teach-accuracy")
            self.download = gr.File(
                label="The transferred model: a lit_transfer checkpoint with its class names",
                interactive=False,
                elem_id="teach-download",
            )
        self._wire()

    def _wire(self) -> None:
        self.names.change(
            self.on_names, [self.names, self.chosen], self.chosen, api_visibility="private", show_progress="hidden"
        )
        clear_pad = "() => { document.querySelector('#teach-draw .clear')?.click(); }"  # ready for the next one
        added = [self.state, self.gallery, self.message]
        for button, test, name in ((self.add_button, False, "add_example"), (self.add_test_button, True, "add_test")):
            button.click(
                lambda d, c, t, s, test=test: self.add(d, c, t, s, test),
                [self.pad, self.chosen, self.names, self.state],
                added,
                api_name=name,
                show_progress="hidden",
            ).then(None, js=clear_pad)
        self.upload.upload(
            self.add_files,
            [self.upload, self.chosen, self.names, self.state],
            [*added, self.upload],
            api_name="add_files",
            show_progress="hidden",
        )
        self.clear_button.click(self.clear, [self.state], added, api_visibility="private")
        tried = [*self.probs.values(), *self.top.values(), self.try_message]
        self.teach_button.click(
            self.on_teach,
            [self.names, self.state, self.stages],
            [*added, self.download, self.accuracy, *tried],
            api_name="teach",
            concurrency_limit=2,  # two sessions teach at once (a second press in one session is told to wait)
            show_progress="full",  # the progress bar and its steps over the outputs while it trains
        )
        self.try_pad.change(
            self.predict,
            [self.try_pad, self.state],
            tried,
            api_name="predict_taught",
            show_progress="hidden",
            trigger_mode="always_last",
        )
