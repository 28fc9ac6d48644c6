"""The demo page as the browser tests see it: Debian's Chromium, a tab on the page with what the tests read from
it, and ``predict`` on the same image files to compare against."""

from __future__ import annotations

import csv
import itertools
import os
import re
import shutil
from pathlib import Path

import torch
from helpers import REPO, common_args, only_run, run_cli

from lit_transfer.images.rule import load_mnist

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download cannot reach its host here: Debian's Chromium, headless, with nothing that
# phones home (so a request to anywhere but the page's own server is a finding: Page.outside).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("LIT_TRANSFER_SCREENSHOTS")  # a folder to copy the screenshots into (for people)
TIMEOUT_MS = 30_000


class Page:
    """One browser tab on the demo, with what the tests read from it."""

    def __init__(self, browser, url: str, shots: Path) -> None:
        self.url, self.shots = url, shots
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.outside: list[str] = []  # requests to anywhere but the page's own server
        local = ("data:", "blob:", url.rstrip("/"))
        self.page.on("request", lambda r: None if r.url.startswith(local) else self.outside.append(r.url))
        self.page.goto(url)
        self.page.wait_for_selector("#draw canvas", timeout=TIMEOUT_MS)

    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").inner_text()

    def wait_for_text(self, elem_id: str, pattern: str) -> str:
        """Wait until the element's text matches ``pattern`` (a regular expression); return the text."""
        self.page.wait_for_function(
            "([id, pattern]) => new RegExp(pattern).test(document.getElementById(id)?.innerText ?? '')",
            arg=[elem_id, pattern],
            timeout=TIMEOUT_MS,
        )
        return self.text(elem_id)

    def upload(self, path: Path) -> None:
        self.page.get_by_role("tab", name="Upload an image").click()
        self.page.locator("#upload input[type=file]").set_input_files(str(path))

    def draw(self, strokes: list[list[tuple[float, float]]], pad: str = "draw") -> None:
        """Mouse strokes on a drawing pad (the element id ``pad``); points as fractions of the canvas' width and
        height."""
        if pad == "draw":
            self.page.get_by_role("tab", name="Draw").click()
        box = self.page.locator(f"#{pad} canvas").first.bounding_box()
        for stroke in strokes:
            points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
            self.page.mouse.move(*points[0])
            self.page.mouse.down()
            for a, b in itertools.pairwise(points):
                for t in (0.25, 0.5, 0.75, 1.0):  # intermediate moves, as a hand makes them
                    self.page.mouse.move(a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
            self.page.mouse.up()

    def answers(self) -> dict[str, tuple[str, float]]:
        """Each stage's prediction and probability as the page shows them."""
        shown = {}
        for stage in ("source", "target"):
            text = self.wait_for_text(f"{stage}-top", r"Prediction: \S+, probability \d\.\d{3}")
            name, p = re.search(r"Prediction: (\S+), probability (\d\.\d{3})", text).groups()
            shown[stage] = (name, float(p))
        return shown

    def input_image(self, path: Path) -> torch.Tensor:
        """The 28x28 input the page shows, fetched as the browser got it and saved as ``path``."""
        src = self.page.locator("#input28 img").get_attribute("src")
        path.write_bytes(self.page.request.get(src).body())
        return load_mnist(path)

    def images_rendered(self, elem_id: str) -> bool:
        return self.page.locator(f"#{elem_id} img").evaluate("img => img.complete && img.naturalWidth > 0")

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(SCREENSHOTS) / path.name)
        return path


def predict(trained: dict[str, Path], stage: str, image: Path, out: Path) -> tuple[str, float]:
    """``python -m lit_transfer predict`` on one image file: (predicted class, probability) from predictions.csv."""
    config = REPO / "configs" / ("pretrain.yaml" if stage == "source" else "finetune.yaml")
    args = [*common_args(trained["data"], out, stage), f"--data.predict_path={image}"]
    run_cli("predict", "--config", config, "--ckpt_path", trained[stage], *args)
    with open(only_run(out / stage / "predict") / "predictions.csv", newline="") as f:  # evaluations: own folder
        (row,) = list(csv.DictReader(f))
    return row["predicted"], float(row["probability"])


def assert_same_answers(shown: dict[str, tuple[str, float]], trained: dict[str, Path], image: Path, out: Path):
    for stage in ("source", "target"):
        name, p = predict(trained, stage, image, out)
        assert shown[stage][0] == name, (stage, shown[stage], name, p)
        assert abs(shown[stage][1] - p) <= 0.0005 + 1e-6, (stage, shown[stage], p)  # the same to 3 decimals
