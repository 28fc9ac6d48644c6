"""``export --format web``: the page, served as static files on 127.0.0.1, driven in Debian's Chromium.

Stage one and stage two are trained briefly with the real CLI (on the real MNIST where LIT_TRANSFER_MNIST_ROOT
says where it is, else on synthetic digits), exported as a page, and the page is checked against
``python -m lit_transfer predict`` and against lit_transfer's image rule on the same files.
"""

from __future__ import annotations

import base64
import csv
import functools
import http.server
import itertools
import json
import random
import threading
from pathlib import Path

import numpy
import pytest
import torch
from demo_page import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, TIMEOUT_MS
from helpers import REAL_MNIST, REPO, common_args, only_run, run_cli, write_mnist
from PIL import Image
from symbols import picture, strokes

from lit_transfer.checkpoint import load_network
from lit_transfer.export import main as export
from lit_transfer.export import web
from lit_transfer.images.rule import load_mnist

pytestmark = pytest.mark.skipif(
    not all(f.is_file() for f in (web.PAGE / "node_modules" / name for name in web.RUNTIME)),
    reason=f"the page's runtime is not installed: npm ci --ignore-scripts --prefix {web.PAGE}",
)
AGREEMENT_IMAGES = 1000


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("web")
    data = Path(REAL_MNIST) if REAL_MNIST else write_mnist(root / "data")
    runs = root / "runs"
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=40", "--trainer.limit_val_batches=2"]
    run_cli("fit", "--config", REPO / "configs/pretrain.yaml", *common_args(data, runs, "pretrain"), *quick)
    source = only_run(runs / "pretrain") / "checkpoints" / "last.ckpt"
    finetune = [*common_args(data, runs, "finetune"), *quick, "--ckpt_path", source]
    run_cli("fit", "--config", REPO / "configs/finetune.yaml", *finetune)
    target = only_run(runs / "finetune") / "checkpoints" / "last.ckpt"
    folder = root / "page"
    export(["--ckpt_path", str(target), "--format", "web", "--output", str(folder)])
    return {"root": root, "data": data, "runs": runs, "source": source, "target": target, "folder": folder}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output stays readable
        pass


@pytest.fixture(scope="module")
def served(stages):
    """The folder as any static host serves it: Python's file server, 127.0.0.1 only."""
    handler = functools.partial(QuietHandler, directory=str(stages["folder"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


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
def page(browser, served, tmp_path: Path):
    """A fresh tab on the page, loaded; afterwards: no request left 127.0.0.1 and no script error."""
    tab = browser.new_page(viewport={"width": 1280, "height": 1000})
    outside, errors = [], []
    tab.on("request", lambda r: None if r.url.startswith((served, "data:", "blob:")) else outside.append(r.url))
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.goto(served)
    tab.wait_for_selector("body[data-ready=yes]", timeout=TIMEOUT_MS)
    yield tab
    tab.close()
    assert not outside, f"the page fetched from elsewhere: {outside}"
    assert not errors, errors


def screenshot(tab, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENSHOTS) / path.name).write_bytes(path.read_bytes())
    return path


def draw(tab, selector: str, lines: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on a canvas, points as fractions of its size."""
    tab.locator(selector).scroll_into_view_if_needed()  # the mouse reaches what the viewport shows
    box = tab.locator(selector).bounding_box()
    for stroke in lines:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        tab.mouse.move(*points[0])
        tab.mouse.down()
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            for t in (0.25, 0.5, 0.75, 1.0):
                tab.mouse.move(ax + t * (bx - ax), ay + t * (by - ay))
        tab.mouse.up()


def message(tab, elem_id: str) -> str:
    tab.wait_for_selector(f"#{elem_id}:not([hidden])", timeout=TIMEOUT_MS)
    return tab.locator(f"#{elem_id}").inner_text()


def shown_input(tab) -> torch.Tensor:
    """The 28x28 input the page shows (its canvas' pixels)."""
    grey = tab.evaluate(
        "() => Array.from(document.getElementById('try-input').getContext('2d').getImageData(0, 0, 28, 28).data)"
        ".filter((_, i) => i % 4 === 0)"
    )
    return torch.tensor(grey, dtype=torch.uint8).view(28, 28)


def bars(tab, stage: str) -> dict[str, float]:
    rows = tab.locator(f"#try-stage-{stage} .bar")
    return {rows.nth(i).get_attribute("data-class"): float(rows.nth(i).get_attribute("data-probability"))
            for i in range(rows.count())}  # fmt: skip


def probabilities(checkpoint: Path, images: torch.Tensor) -> torch.Tensor:
    backbone, head, _ = load_network(checkpoint)
    with torch.no_grad():
        return head(backbone(images.unsqueeze(1).float() / 255)).softmax(1)


# --- the folder ----------------------------------------------------------------------------------------------
def test_the_folder_is_small_and_self_contained(stages):
    folder = stages["folder"]
    assert web.folder_size(folder) <= 15e6
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"index.html", "models.js", "page.js", "rule.js", "page.css"} <= names
    html = (folder / "index.html").read_text()
    assert "http://" not in html.replace("https://www.tensorflow.org/js", "") and "cdn" not in html.lower()
    for script in ("runtime/tf-core.min.js", "runtime/tf-backend-cpu.min.js", "runtime/tf-layers.min.js"):
        assert script in names and f'src="{script}"' in html


def test_export_never_replaces_a_folder_and_names_a_missing_stage_one(stages, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(["--ckpt_path", str(stages["target"]), "--format", "web", "--output", str(stages["folder"])])
    assert "already exists" in str(exit_info.value) and len(str(exit_info.value).splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:  # a stage-one checkpoint where stage two belongs
        export(["--ckpt_path", str(stages["source"]), "--format", "web", "--output", str(tmp_path / "x")])
    assert "stage-one checkpoint" in str(exit_info.value) and not (tmp_path / "x").exists()


# --- Try a digit ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_MNIST, reason="set LIT_TRANSFER_MNIST_ROOT to the folder that holds MNIST/raw/")
def test_the_page_gives_predicts_answers_on_1000_real_test_images(page, stages, tmp_path):
    """Both stages: the page's class and probability equal ``predict``'s on the same real test images, and every
    probability the page gives is within 1e-5 of the network's in PyTorch."""
    from torchvision.datasets import MNIST

    test_images = MNIST(stages["data"], train=False, download=False).data
    worst = 0.0
    for stage, config, key in (("one", "pretrain.yaml", "source"), ("two", "finetune.yaml", "target")):
        out = tmp_path / stage
        run_cli("predict", "--config", REPO / "configs" / config, "--ckpt_path", stages[key],
                *common_args(stages["data"], out, stage))  # fmt: skip
        with open(only_run(out / stage / "predict") / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))[:AGREEMENT_IMAGES]
        assert len(rows) == AGREEMENT_IMAGES
        images = test_images[[int(r["test_index"]) for r in rows]]
        encoded = base64.b64encode(images.numpy().tobytes()).decode()
        shown = torch.tensor(
            page.evaluate(
                """([stage, b64]) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const one = (_, i) => bytes.subarray(784 * i, 784 * (i + 1));
                    const images = Array.from({length: bytes.length / 784}, one);
                    return litTransfer.predict(stage, images);
                }""",
                [stage, encoded],
            ),
            dtype=torch.float64,
        )
        classes = page.evaluate(f"litTransfer.spec.stages.{stage}.classes")
        page_class = [classes[i] for i in shown.argmax(1).tolist()]
        assert page_class == [r["predicted"] for r in rows]
        predict_p = torch.tensor([float(r["probability"]) for r in rows], dtype=torch.float64)
        assert torch.allclose(shown.max(1).values, predict_p, atol=1e-4, rtol=0)  # the CSV rounds to 4 decimals
        difference = (shown - probabilities(stages[key], images).double()).abs().max().item()
        assert difference <= 1e-5, difference
        worst = max(worst, difference)
    (tmp_path / "agreement.json").write_text(json.dumps({"images": AGREEMENT_IMAGES, "max_difference": worst}))


def test_a_drawn_digit_shows_its_input_and_both_stages_answers(page, stages, tmp_path):
    lines = [[(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]]  # a 7
    draw(page, "#try-pad", lines)
    page.wait_for_selector("#try-answers:not([hidden])", timeout=TIMEOUT_MS)
    image = shown_input(page)
    assert image.max() > 200 and image[0].max() == 0  # light ink on dark, with a margin: the rule's layout
    for stage, key in (("one", "source"), ("two", "target")):
        shown = bars(page, stage)
        expected = probabilities(stages[key], image.unsqueeze(0))[0]
        assert list(shown) == page.evaluate(f"litTransfer.spec.stages.{stage}.classes")
        assert torch.allclose(torch.tensor(list(shown.values())), expected, atol=1e-5)
    screenshot(page, tmp_path, "web-try")


def test_the_page_works_opened_as_a_file_without_a_server(browser, stages):
    """Double-clicking index.html: file://, no server; it loads, and a drawing gets both stages' answers."""
    tab = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    try:
        tab.goto((stages["folder"] / "index.html").as_uri())
        tab.wait_for_selector("body[data-ready=yes]", timeout=TIMEOUT_MS)
        draw(tab, "#try-pad", [[(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]])
        tab.wait_for_selector("#try-answers:not([hidden])", timeout=TIMEOUT_MS)
        image = shown_input(tab)
        shown = bars(tab, "two")
        expected = probabilities(stages["target"], image.unsqueeze(0))[0]
        assert torch.allclose(torch.tensor(list(shown.values())), expected, atol=1e-5)
    finally:
        tab.close()
    assert not errors, errors


def symbol_files(tmp_path: Path) -> list[Path]:
    """Image files of several kinds: a drawing (RGB PNG), a transparent PNG, a JPEG, and a 28x28 grey digit."""
    rng = random.Random(3)
    drawn = picture(strokes("plus", rng))
    files = [tmp_path / "drawn.png", tmp_path / "clear.png", tmp_path / "photo.jpg", tmp_path / "digit.png"]
    drawn.save(files[0])
    rgba = picture(strokes("times", rng)).convert("RGBA")
    alpha = Image.eval(rgba.convert("L"), lambda v: 255 - v)  # ink opaque, paper transparent
    rgba.putalpha(alpha)
    rgba.save(files[1])
    picture(strokes("minus", rng)).resize((97, 61)).save(files[2], quality=90)
    Image.fromarray(numpy.array(load_mnist(files[0]))).save(files[3])
    return files


def test_a_dropped_file_becomes_the_input_the_image_rule_gives_to_the_bit(page, tmp_path):
    for path in symbol_files(tmp_path):
        page.locator("#try-file").set_input_files(str(path))
        page.wait_for_selector("#try-answers:not([hidden])", timeout=TIMEOUT_MS)
        assert torch.equal(shown_input(page), load_mnist(path)), path.name
        page.click("#try-clear")


def drop(tab, selector: str, name: str, content: bytes, kind: str) -> None:
    """A file dropped on an element, as a user drags one from their files."""
    transfer = tab.evaluate_handle(
        """([name, b64, kind]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: kind}));
            return transfer;
        }""",
        [name, base64.b64encode(content).decode(), kind],
    )
    tab.dispatch_event(selector, "drop", {"dataTransfer": transfer})


# --- Teach ---------------------------------------------------------------------------------------------------
def teach(tab, names: dict[str, int], seed: int) -> None:
    """Name the page's classes and draw ``n`` examples of each symbol on its card (cards added as needed)."""
    rng = random.Random(seed)
    while tab.locator(".card").count() < len(names):
        tab.click("#add-class")
    for i, (name, n) in enumerate(names.items()):
        card = tab.locator(".card").nth(i)
        card.locator(".class-name").fill(name)
        for _ in range(n):
            draw(tab, f".card:nth-child({i + 1}) .pad", strokes(name, rng))
            card.locator(".add-example").click()
        assert card.locator(".count").inner_text() == f"{n} example{'s' if n != 1 else ''}"


def test_teach_three_symbols_from_three_drawings_each_and_both_learners_answer(page, tmp_path):
    teach(page, {"plus": 3, "minus": 3, "times": 3}, seed=0)
    page.click("#teach-button")
    done = message(page, "teach-test")
    assert "Taught 3 classes from 9 examples" in done
    assert float(page.locator("#teach-done").get_attribute("data-ms")) < 1000
    rng = random.Random(5)
    for name in ("plus", "minus", "times"):
        page.click("#test-clear")
        draw(page, "#test-pad", strokes(name, rng))
        page.wait_for_selector("#teach-answers:not([hidden])", timeout=TIMEOUT_MS)
        answers = {kind: page.locator(f"#answer-{kind}").inner_text() for kind in ("features", "pixels")}
        assert set(answers.values()) <= {"plus", "minus", "times"}, answers
        assert answers["features"] == name, answers  # the transferred features get a clean drawing right
    screenshot(page, tmp_path, "web-teach")


def test_the_page_learner_is_the_class_mean_of_stage_ones_features(page, stages):
    """The page's answer is the nearest class mean (cosine) of fc1's output, computed here in PyTorch."""
    rng = random.Random(11)
    names = ["plus", "minus", "times"]
    taught = {n: torch.stack([load_mnist_picture(n, rng) for _ in range(3)]) for n in names}
    tests = torch.stack([load_mnist_picture(n, rng) for n in names for _ in range(4)])
    answers = page.evaluate(
        """([classes, tests]) => {
            const u8 = (list) => list.map((image) => Uint8Array.from(image));
            const taught = litTransfer.teach(classes.map(([name, images]) => ({name, images: u8(images)})));
            return u8(tests).map((image) => litTransfer.classify(taught, image));
        }""",
        [[[n, x.flatten(1).tolist()] for n, x in taught.items()], tests.flatten(1).tolist()],
    )
    backbone, head, _ = load_network(stages["source"])

    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(head.relu(head.fc1(backbone.features(x.unsqueeze(1) / 255))), dim=1)

    with torch.no_grad():
        means = torch.nn.functional.normalize(torch.stack([embed(x.float()).mean(0) for x in taught.values()]), dim=1)
        expected = (embed(tests.float()) @ means.T).argmax(1)
    assert [a["features"]["name"] for a in answers] == [names[i] for i in expected.tolist()]


def load_mnist_picture(name: str, rng: random.Random) -> torch.Tensor:
    from lit_transfer.images.rule import to_mnist

    return to_mnist(picture(strokes(name, rng)))


def test_bad_teaching_input_gets_a_message_each_and_the_page_keeps_working(page, tmp_path):
    # a class with no name
    page.locator(".card").nth(0).locator(".class-name").fill("")
    page.click("#teach-button")
    assert "Class 1 has no name" in message(page, "teach-message")
    # a class with no examples
    teach(page, {"plus": 3, "minus": 3}, seed=1)
    page.locator(".card").nth(2).locator(".class-name").fill("times")
    page.click("#teach-button")
    assert '"times" has 0 examples: draw at least 3' in message(page, "teach-message")
    # adding an empty drawing
    page.locator(".card").nth(2).locator(".add-example").click()
    assert "Draw an example" in message(page, "teach-message")
    # a file that is not an image, dropped on a class and on the digit pad
    drop(page, ".card:nth-child(3) .pad", "notes.txt", b"not an image", "text/plain")
    page.wait_for_function("() => /notes.txt is not an image/.test(document.getElementById('teach-message').innerText)")
    drop(page, "#try-pad", "notes.txt", b"not an image", "text/plain")
    assert "notes.txt is not an image" in message(page, "try-message")
    # 11 classes
    while page.locator(".card").count() < 10:
        page.click("#add-class")
    page.click("#add-class")
    assert page.locator(".card").count() == 10
    assert "At most 10 classes" in message(page, "teach-message")
    screenshot(page, tmp_path, "web-bad-input")
    # and it still works: remove the extra classes, finish the third, teach
    while page.locator(".card").count() > 3:
        page.locator(".card").nth(3).locator(".remove").click()
    rng = random.Random(2)
    for _ in range(3):
        draw(page, ".card:nth-child(3) .pad", strokes("times", rng))
        page.locator(".card").nth(2).locator(".add-example").click()
    page.click("#teach-button")
    assert "Taught 3 classes from 9 examples" in message(page, "teach-test")
    drop(page, "#test-pad", "x.png", png(strokes("times", rng)), "image/png")
    page.wait_for_selector("#teach-answers:not([hidden])", timeout=TIMEOUT_MS)
    assert page.locator("#answer-features").inner_text() in {"plus", "minus", "times"}


def png(lines) -> bytes:
    import io

    buffer = io.BytesIO()
    picture(lines).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_missing_runtime_is_a_one_line_error_with_the_npm_command(stages, tmp_path, monkeypatch):
    monkeypatch.setattr(web, "PAGE", tmp_path / "page")  # a page folder where npm ci never ran
    with pytest.raises(SystemExit) as exit_info:
        export(["--ckpt_path", str(stages["target"]), "--format", "web", "--output", str(tmp_path / "out")])
    error = str(exit_info.value)
    assert "npm ci --ignore-scripts --prefix" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()
