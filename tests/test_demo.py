"""The demo page, driven in a real browser: Debian's Chromium through Playwright's Python package.

Tiny checkpoints are trained with the real CLI on synthetic data; ``python -m lit_transfer demo`` serves them in a
subprocess; the page's answers are checked against ``python -m lit_transfer predict`` on the same image files.
Where Chromium cannot start, the browser tests are skipped with the reason.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from demo_page import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, Page, assert_same_answers
from helpers import REPO, common_args, make_digits, only_run, results, run_cli, write_mnist
from PIL import Image

from lit_transfer.demo import serve
from lit_transfer.demo.pictures import COLUMNS, GAP, ZOOM
from lit_transfer.demo.runs import pick_pair
from lit_transfer.images import BOX, INK, load_mnist


# --- checkpoints, the server, the browser ------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stage one, stage two from it, then an unrelated stage one, all under ``runs/``; MNIST-style test files."""
    root = tmp_path_factory.mktemp("demo")
    data = write_mnist(root / "data")
    runs = root / "runs"
    run_cli(
        "fit",
        "--config",
        REPO / "configs/pretrain.yaml",
        *common_args(data, runs, "pretrain"),
        "--trainer.max_epochs=2",
    )
    source = only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"
    finetune = [*common_args(data, runs, "finetune"), "--trainer.max_epochs=2", "--ckpt_path", source]
    run_cli("fit", "--config", REPO / "configs/finetune.yaml", *finetune)
    target = only_run(runs / "finetune") / "checkpoints" / "last.ckpt"
    # the newest stage one under runs/, but not the one stage two was trained from
    other_args = [*common_args(data, runs, "other"), "--trainer.max_epochs=1", "--seed_everything=1"]
    run_cli("fit", "--config", REPO / "configs/pretrain.yaml", *other_args)
    other = only_run(runs / "other") / "checkpoints" / "last.ckpt"
    images, labels = make_digits(1, seed=7)  # one of each digit, as the test files are made
    files = {}
    for image, label in zip(images, labels.tolist(), strict=True):
        files[label] = root / f"digit{label}.png"
        Image.fromarray(image.numpy(), mode="L").save(files[label])
    return {
        "root": root,
        "data": data,
        "runs": runs,
        "source": source,
        "target": target,
        "other": other,
        **{f"digit{d}": f for d, f in files.items()},
    }


@pytest.fixture(scope="module")
def server(trained: dict[str, Path]):
    """``python -m lit_transfer demo`` on 127.0.0.1 and a free port, in a subprocess; yields its address."""
    command = [sys.executable, "-m", "lit_transfer", "demo", "--runs", str(trained["runs"]), "--port", "0"]
    # Gradio keeps uploads and answers in GRADIO_TEMP_DIR (/tmp/gradio by default): the test's own folder instead
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_TEMP_DIR": str(trained["root"] / "gradio")}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:  # keeps draining the pipe so the server never blocks on a full one
        for line in proc.stdout:
            log.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=120)
            if (found := re.search(r"serving on (http://\S+)", line)) is not None:
                url = found.group(1)
        yield {"url": url, "process": proc, "log": log}
    except queue.Empty:
        pytest.fail("the demo did not start within 120 s:\n" + "".join(log))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as err:
        playwright.stop()
        pytest.skip(f"Chromium cannot start: {str(err).splitlines()[0]}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser, server, tmp_path: Path):
    """A fresh tab; afterwards the server must still run, with no exception logged and no "Error" on the page."""
    logged = len(server["log"])
    tab = Page(browser, server["url"], tmp_path)
    yield tab
    errors = tab.page.get_by_text("Error", exact=True).count()  # Gradio's badge where a handler raised
    tab.page.close()
    assert server["process"].poll() is None, "the demo server stopped:\n" + "".join(server["log"])
    log = "".join(server["log"][logged:])
    assert "Traceback" not in log and errors == 0, log


# --- the page ----------------------------------------------------------------------------------------------
def test_uploaded_image_gets_predicts_answers_and_the_shared_feature_maps(page, trained, tmp_path):
    image = trained["digit3"]
    page.upload(image)
    shown = page.answers()
    assert torch.equal(page.input_image(tmp_path / "input.png"), load_mnist(image))  # the input the networks got
    assert_same_answers(shown, trained, image, tmp_path / "predict")
    for layer, size in (("conv1", 26), ("conv2", 24)):  # 32 maps each, as 4 rows of 8 tiles
        for stage in ("source", "target"):
            assert page.images_rendered(f"{layer}-{stage}"), (layer, stage)
            width = page.page.locator(f"#{layer}-{stage} img").evaluate("img => img.naturalWidth")
            assert width == COLUMNS * (size * ZOOM + GAP), (layer, stage, width)
    note = page.text("features-note")
    assert "identical feature maps through both networks" in note
    assert "conv1: identical (torch.equal: True)" in note and "conv2: identical (torch.equal: True)" in note
    page.screenshot("upload")
    assert page.outside == []


def test_drawn_digit_gets_the_answers_predict_gives_for_the_input_shown(page, trained, tmp_path):
    page.draw([[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]])  # a 7, in one stroke: one answer to compare
    page.wait_for_text("message", "your drawing")
    shown = page.answers()
    drawn = tmp_path / "drawn.png"
    image = page.input_image(drawn)
    # the image rule's MNIST recipe: light ink on dark, the digit's longer side 20 pixels, centred by its mass
    ink = (image > INK).nonzero()
    assert image[0].max() == 0 and int(image.max()) > 128
    assert max((ink.max(0).values - ink.min(0).values + 1).tolist()) in (BOX, BOX + 1)  # antialiasing: +1 at most
    rows, cols = torch.arange(28.0), torch.arange(28.0)
    mass = image.float()
    centre = ((mass.sum(1) * rows).sum() / mass.sum(), (mass.sum(0) * cols).sum() / mass.sum())
    assert all(abs(c - 13.5) <= 1 for c in centre), centre
    assert_same_answers(shown, trained, drawn, tmp_path / "predict")
    assert page.images_rendered("conv2-target")
    page.screenshot("drawing")
    assert page.outside == []


def test_bad_input_shows_a_message_and_the_server_keeps_answering(page, trained, tmp_path):
    page.upload(trained["digit2"])
    page.answers()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    page.upload(broken)
    assert "broken.png is not a readable image" in page.wait_for_text("message", "not a readable image")
    assert page.text("source-top") == page.text("target-top") == ""  # no answer left over from the last image
    assert page.page.locator("#input28 img, #conv1-target img").count() == 0
    page.screenshot("bad-file")
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    page.upload(blank)
    assert "blank" in page.wait_for_text("message", "blank")
    page.draw([[(0.5, 0.2), (0.5, 0.8)]])
    page.wait_for_text("message", "your drawing")
    page.page.get_by_role("button", name="Clear").click()  # an empty drawing
    page.wait_for_text("message", "^Draw a digit")
    assert page.text("source-top") == ""
    page.page.locator("#checkpoints-accordion").click()  # open it
    picker = page.page.locator("#target-ckpt input")
    picker.fill(str(trained["digit1"]))
    picker.press("Enter")
    assert "not a readable PyTorch checkpoint" in page.wait_for_text("checkpoint-message", "Not loaded")
    page.page.wait_for_function(  # the picker shows the checkpoint the page kept
        "([sel, value]) => document.querySelector(sel)?.value === value",
        arg=["#target-ckpt input", str(trained["target"])],
        timeout=TIMEOUT_MS,
    )
    page.page.wait_for_timeout(500)  # for the screenshot only: the picker's reset settles
    page.screenshot("bad-checkpoint")
    page.upload(trained["digit4"])  # the same session, still served, with the checkpoints it had
    assert_same_answers(page.answers(), trained, trained["digit4"], tmp_path / "predict")


def test_features_differ_through_an_unrelated_stage_one(page, trained):
    page.page.locator("#checkpoints-accordion").click()
    picker = page.page.locator("#source-ckpt input")
    picker.fill(str(trained["other"]))
    picker.press("Enter")
    page.wait_for_text("checkpoint-message", "Loaded")
    page.upload(trained["digit6"])
    note = page.wait_for_text("features-note", "differ")
    assert "conv1: different (torch.equal: False)" in note
    assert "conv2: different (torch.equal: False)" in note


def test_each_run_shows_its_curves_confusion_matrix_and_results(page, trained):
    for stage, tab, names in (
        ("source", "Stage one's run", "5, 6, 7, 8, 9"),
        ("target", "Stage two's run", "0, 1, 2, 3, 4"),
    ):
        page.page.get_by_role("tab", name=tab).click()
        header = page.wait_for_text(f"{stage}-run-header", "Run folder")
        assert str(trained[stage]) in header and f"classes {names}" in header
        for plot in ("curves", "confusion"):
            page.page.wait_for_selector(f"#{stage}-{plot} img", timeout=TIMEOUT_MS)
            assert page.images_rendered(f"{stage}-{plot}"), (stage, plot)
        table = page.text(f"{stage}-results")
        run = results(trained[stage].parent.parent)
        assert f"{100 * run['test_acc']:.2f}%" in table
        assert f"{run['total_params']:,}" in table and f"{run['frozen_params']:,}" in table
        page.screenshot(f"run-{stage}")


# --- the command line --------------------------------------------------------------------------------------
def test_default_checkpoints_are_the_newest_stage_two_and_the_stage_one_it_came_from(trained):
    assert pick_pair(trained["runs"]) == (trained["source"], trained["target"])
    # given a stage one, the stage two trained from it; given a stage two, the stage one it was trained from
    assert pick_pair(trained["runs"], source=str(trained["source"]))[1] == trained["target"]
    assert pick_pair(trained["runs"], target=str(trained["target"]))[0] == trained["source"]


def test_no_runs_is_a_one_line_error_naming_what_was_looked_for(tmp_path):
    with pytest.raises(SystemExit) as exit:
        serve.main(["--runs", str(tmp_path)])
    message = str(exit.value.code)
    assert message.startswith("lit_transfer demo: error: no stage-two checkpoint") and "\n" not in message
    assert str(tmp_path) in message and "last.ckpt" in message


def test_a_checkpoint_that_is_not_ours_is_a_one_line_error(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SystemExit) as exit:
        serve.main(["--source", str(foreign), "--target", str(foreign)])
    message = str(exit.value.code)
    assert "is not a lit_transfer checkpoint" in message and "\n" not in message
