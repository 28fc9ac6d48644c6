"""The web page's Teach part, measured in Chromium with the page's own code: held-out accuracy of the class-mean
learner on stage one's features against the same learner on raw pixels, and the time to teach.

For each seed, symbols are drawn by program with a hand's jitter (tests/symbols.py: black strokes on a white
280x280 pad, as the page's pad draws them); ``--shots`` of each class are taught and ``--test-per-class`` others
are classified. Every step runs in the page: the PNG decoded by the browser, its image rule (rule.js), its features
(TensorFlow.js) and its learner (page.js). Also measured: the same learner on the convolutions' output (the layers
stage two freezes), computed in PyTorch, which is why the page learns on fc1 instead (docs/web.md).

    python benchmarks/web_teach.py --ckpt_path runs/finetune/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's lit_transfer; the symbols the tests draw

from demo_page import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from symbols import picture, strokes  # noqa: E402

SETS = {
    "+ - x": ["plus", "minus", "times"],
    "L T Z": ["L", "T", "Z"],
    "all six": ["plus", "minus", "times", "L", "T", "Z"],
}

PAGE_RUN = """async ([names, shots, pictures]) => {
    const file = (b64) => new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], "d.png", {type: "image/png"});
    const images = await Promise.all(pictures.map((p) => fileToMnist(file(p))));
    const per = images.length / names.length;
    const classes = names.map((name, c) => ({name, images: images.slice(c * per, c * per + shots)}));
    const start = performance.now();
    const taught = litTransfer.teach(classes);
    const ms = performance.now() - start;
    const right = {features: 0, pixels: 0};
    let tested = 0;
    names.forEach((name, c) => {
        for (const image of images.slice(c * per + shots, (c + 1) * per)) {
            const answer = litTransfer.classify(taught, image);
            for (const kind of ["features", "pixels"]) right[kind] += answer[kind].name === name;
            tested += 1;
        }
    });
    return {ms, features: 100 * right.features / tested, pixels: 100 * right.pixels / tested};
}"""


def png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def conv_accuracy(source: Path, names: list[str], shots: int, test: int, seed: int) -> float:
    """The same learner on the convolutions' output (4608 numbers), in PyTorch, on the same drawings."""
    from lit_transfer.checkpoint import load_network
    from lit_transfer.images.rule import to_mnist

    backbone, _, _ = load_network(source)
    rng = random.Random(seed)
    images = torch.stack([to_mnist(picture(strokes(n, rng))) for n in names for _ in range(shots + test)])
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(backbone.features(images.unsqueeze(1) / 255.0), dim=1)
    vectors = vectors.view(len(names), shots + test, -1)
    means = torch.nn.functional.normalize(vectors[:, :shots].mean(1), dim=1)
    answers = (vectors[:, shots:] @ means.T).argmax(-1)
    return 100 * (answers == torch.arange(len(names)).unsqueeze(1)).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="stage two's checkpoint (stage one: the one it came from)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--test-per-class", type=int, default=30)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from lit_transfer.export import export
    from lit_transfer.export.web import folder_size, stage_one_of

    with tempfile.TemporaryDirectory() as tmp:
        folder = export(args.ckpt_path, "web", str(Path(tmp) / "page"))
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":")[1].strip() for line in cpuinfo if line.startswith("model name")), "")
        print(f"# {cpu or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, torch "
              f"{torch.__version__}; page folder {folder_size(folder) / 1e6:.1f} MB")  # fmt: skip
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            print(f"# Chromium {browser.version}")
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_selector("body[data-ready=yes]", timeout=60_000)
            print("| classes | examples per class | features (fc1) | pixels | convolutions' output | teach (ms) |")
            print("| --- | --- | --- | --- | --- | --- |")
            for label, names in SETS.items():
                for shots in args.shots:
                    runs = []
                    for seed in args.seeds:
                        rng = random.Random(seed)
                        drawn = [
                            png(picture(strokes(n, rng))) for n in names for _ in range(shots + args.test_per_class)
                        ]
                        runs.append(page.evaluate(PAGE_RUN, [names, shots, drawn]))
                        runs[-1]["conv"] = conv_accuracy(
                            stage_one_of(Path(args.ckpt_path)), names, shots, args.test_per_class, seed
                        )
                    cells = []
                    for kind in ("features", "pixels", "conv"):
                        values = [r[kind] for r in runs]
                        cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
                    teach_ms = statistics.median(r["ms"] for r in runs)
                    print(f"| {label} | {shots} | {' | '.join(cells)} | {teach_ms:.0f} |", flush=True)
            browser.close()
        server.shutdown()


if __name__ == "__main__":
    main()
