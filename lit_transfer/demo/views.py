"""The page's words and the per-run view: titles from the checkpoints' own class names, the note on the shared
features, and a run's curves, confusion matrix and results read from its folder; the Teach tab's words, its
examples' gallery and its held-out accuracy."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from lit_transfer.demo import teach
from lit_transfer.demo.inference import SHARED_LAYERS, Model, Output
from lit_transfer.demo.pictures import confusion_figure, curves_figure, results_table
from lit_transfer.demo.runs import read_curves, read_results, run_dir

STAGE_NAMES = {"source": "Stage one", "target": "Stage two"}
MAP_SIZES = {"conv1": "26x26", "conv2": "24x24"}

INTRO = """
# See the transfer: one set of frozen features, two heads
Stage one trained the whole CNN on its digits. Stage two kept stage one's convolutional layers (**conv1**, **conv2**)
frozen and trained only a new dense head on other digits. Draw a digit or drop an image file: both networks answer,
and below them are the frozen layers' feature maps, computed through each network.
"""
START_MESSAGE = "Draw a digit with the mouse (or a finger), or drop an image file."


def stage_title(stage: str, model: Model) -> str:
    return f"{STAGE_NAMES[stage]}: classes {', '.join(model.names)}"


def features_note(a: Output, b: Output) -> str:
    """Whether the shared layers gave the same maps through both networks (bit for bit), and what that means."""
    equal = {layer: torch.equal(a.maps[layer], b.maps[layer]) for layer in SHARED_LAYERS}
    checks = ", ".join(f"{layer}: {'identical' if e else 'different'} (torch.equal: {e})" for layer, e in equal.items())
    if all(equal.values()):
        return (
            "### The frozen layers give identical feature maps through both networks\n"
            f"Computed through each network for this input and compared bit for bit: {checks}. Stage two trained "
            "only its head: its conv1 and conv2 are stage one's, frozen, so both heads read the same features."
        )
    worst = max(float((a.maps[layer] - b.maps[layer]).abs().max()) for layer in SHARED_LAYERS)
    return (
        "### The feature maps differ between the two networks\n"
        f"{checks}; largest difference {worst:.4g}. Stage two's convolutional layers are not stage one's: it "
        "trained them too (fine-tuning), or the two checkpoints come from unrelated runs."
    )


def run_view(stage: str, model: Model) -> tuple[str, Figure | None, Figure | None, str]:
    """A header, the learning curves, the confusion matrix and the results table of the run that wrote ``model``."""
    meta = model.meta
    frozen = "yes (its conv layers were frozen)" if model.frozen_stage else "no (the whole network trained)"
    header = [
        f"### {STAGE_NAMES[stage]}: `{model.path}`",
        f"Dataset **{meta.get('dataset') or '-'}**, classes **{', '.join(model.names)}**, frozen stage: {frozen}.",
    ]
    folder = run_dir(model.path)
    if folder is None:
        header.append("This checkpoint is not in a run's `checkpoints/` folder: no logs to show.")
        return "\n\n".join(header), None, None, ""
    header.append(f"Run folder `{folder}`.")
    curves = read_curves(folder)
    if not curves:
        header.append("No `metrics.csv` with epoch metrics in the run folder: no learning curves.")
    results = read_results(folder)
    if results is None:
        header.append("No `results.json` in the run folder (the stage's test did not run): no results.")
        return "\n\n".join(header), curves_figure(curves, "Learning curves"), None, ""
    names = model.names if len(model.names) == len(results.get("confusion", [])) else results.get("digits", [])
    names = [str(n) for n in names]
    confusion = confusion_figure(results["confusion"], names, "Test set") if results.get("confusion") else None
    rows = results_table(results)
    table = "| result | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return "\n\n".join(header), curves_figure(curves, "Learning curves"), confusion, table


TEACH_INTRO = f"""
### Teach the frozen features something new
Name 2 to {teach.MAX_CLASSES} classes (symbols such as + - x, letters, shapes: anything), draw or drop at least
{teach.MIN_EXAMPLES} examples of each, and press **Teach**. A new head learns them on stage one's frozen convolutional
layers, and the same network learns them from scratch, fresh and unfrozen, on the same examples for the same number
of steps ({teach.STEPS}, all examples in each). Then draw: both answer side by side.
"""
MODELS = {"transferred": "Transferred: stage one's frozen features, new head", "scratch": "From scratch: same network"}


def gallery(state: dict) -> list[tuple[Image.Image, str]]:
    """The examples as the networks see them, 28x28 (shown enlarged without blur), captioned with their class."""
    return [
        (Image.fromarray(np.kron(e["image"], np.ones((3, 3), np.uint8))), e["name"] + " (test)" * e["test"])
        for e in state["examples"]
    ]


def counts(state: dict, names: list[str]) -> str:
    per = {n: sum(e["name"] == n and not e["test"] for e in state["examples"]) for n in names}
    tests = sum(e["test"] for e in state["examples"])
    text = "Examples: " + ", ".join(f"{n} {c}" for n, c in per.items())
    return text + (f"; test examples: {tests}." if tests else ".")


def accuracy(taught: teach.Taught) -> str:
    """Both models' held-out accuracy, with how it was measured."""
    if taught.correct is None:
        return "Too few examples for a held-out estimate (at least 2 per class)."
    how = (
        f"on the {taught.held_out} test examples you drew (not taught)"
        if taught.estimate == "held-out examples"
        else f"{taught.estimate}: each of the {taught.held_out} examples predicted by models taught without it"
    )
    rows = [
        f"| {MODELS[k]} | {100 * c / taught.held_out:.0f}% ({c} of {taught.held_out}) |"
        for k, c in taught.correct.items()
    ]
    return f"**Held-out accuracy**, {how}:\n\n| model | accuracy |\n|---|---|\n" + "\n".join(rows)
