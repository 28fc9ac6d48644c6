"""How long the demo page takes to answer a prediction, median of many requests, at three depths:

- handler: the page's upload handler in this process (image file -> both networks -> every output value), no HTTP;
- api: ``python -m lit_transfer demo --port 0`` in a subprocess, the same image file sent through Gradio's own
  client (upload, queue, handler, four feature-map PNGs and the input encoded, the answer streamed back), without
  and with downloading the five pictures (the client fetches them one after another);
- browser (``--browser``): Debian's headless Chromium on the page: from handing it an image file, and from the end of
  a mouse stroke on the sketchpad, until the input and all four feature-map pictures are shown;
- concurrent (``--clients 8 --calls 10``): that many clients in threads, each sending ``calls`` image files through
  the API with the pictures downloaded, all about the same image at the same moment; every answer's latency, and how
  many came back whole (issue 37).

    python benchmarks/demo_latency.py --runs runs --requests 100 --browser
    python benchmarks/demo_latency.py --runs runs --requests 0 --clients 8 --calls 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lit_transfer

from lit_transfer.speed.cpu import flush_denormals  # noqa: E402

# the real MNIST: where the tests find it, else beside the checkout (../shared/data/MNIST/raw, as in CI)
DATA_DIR = Path(os.environ.get("LIT_TRANSFER_MNIST_ROOT") or REPO.parent / "shared" / "data")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# True once the input and the four feature-map pictures are shown, and the input is not the one shown before
SHOWN = """(previous) => {
  const ids = ['input28', 'conv1-source', 'conv1-target', 'conv2-source', 'conv2-target'];
  const imgs = ids.map(id => document.querySelector('#' + id + ' img'));
  if (imgs.some(img => !img || !img.complete || img.naturalWidth === 0)) return false;
  const src = imgs[0].getAttribute('src');
  return src !== previous ? src : false;
}"""


def test_images(folder: Path, n: int = 2, size: int = 28) -> list[Path]:
    """The first MNIST test images as ``size`` x ``size`` PNGs (drawn crosses where the real data is absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    mnist = DATA_DIR / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    paths = [folder / f"digit{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        if mnist.is_file():
            start = 16 + 784 * i  # IDX: 16-byte header, then 28x28 uint8 images
            digit = Image.frombytes("L", (28, 28), mnist.read_bytes()[start : start + 784])
            digit.resize((size, size), Image.NEAREST).save(path)
        else:
            image = Image.new("L", (280, 280), 255)
            image.paste(0, (120, 40, 160, 240))
            image.paste(0, (60, 60 + 40 * i, 220, 100 + 40 * i))  # the cross bar at another height each
            image.save(path)
    return paths


def timed(fn, n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(times), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))], "n": len(times)}


def browser_times(url: str, images: list[Path], n: int) -> dict[str, list[float]]:
    """Upload -> shown and stroke end -> shown in headless Chromium (alternating images, so each answer is new)."""
    from playwright.sync_api import sync_playwright

    times = {"upload": [], "stroke": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#draw canvas")
        page.get_by_role("tab", name="Upload an image").click()
        shown = None
        for k in range(n + 3):  # the first three warm up
            start = time.perf_counter()
            page.locator("#upload input[type=file]").set_input_files(str(images[k % len(images)]))
            shown = page.wait_for_function(SHOWN, arg=shown, polling=5).json_value()
            times["upload"] += [1000 * (time.perf_counter() - start)] if k >= 3 else []
        page.get_by_role("tab", name="Draw").click()
        page.wait_for_timeout(500)
        box = page.locator("#draw canvas").first.bounding_box()
        for k in range(n + 3):
            x = box["x"] + box["width"] * (0.3 + 0.3 * k / (n + 3))  # a new line each time, inside the drawing area
            page.mouse.move(x, box["y"] + box["height"] * 0.3)
            page.mouse.down()
            for j in range(8):
                page.mouse.move(x + 2 * j, box["y"] + box["height"] * (0.3 + 0.4 * j / 7))
            start = time.perf_counter()
            page.mouse.up()
            shown = page.wait_for_function(SHOWN, arg=shown, polling=5).json_value()
            times["stroke"] += [1000 * (time.perf_counter() - start)] if k >= 3 else []
        browser.close()
    return times


def concurrent(url: str, images: list[Path], clients: int, calls: int, folder: Path) -> dict:
    """``clients`` API clients in threads, ``calls`` each, pictures downloaded, all on the same image at once."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    failures: list[str] = []
    barrier = threading.Barrier(clients)

    def ask(n: int) -> None:
        client = Client(url, verbose=False, download_files=str(folder / f"client{n}"))
        barrier.wait()
        for call in range(calls):
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(images[call % len(images)])), api_name="/predict_file")
                latencies.append(1000 * (time.perf_counter() - start))
            except Exception as err:  # a cut-off answer: counted, the client goes on
                failures.append(f"{type(err).__name__}: {str(err)[:120]}")

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "answered_whole": len(latencies),
        "asked": clients * calls,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] if latencies else None,
        "failures": failures[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="where the demo looks for checkpoints")
    parser.add_argument("--source", default=None)
    parser.add_argument("--target", default=None)
    parser.add_argument("--requests", type=int, default=100, help="per measurement (the browser's: a fifth)")
    parser.add_argument("--browser", action="store_true", help="also measure in headless Chromium")
    parser.add_argument("--clients", type=int, default=0, help="concurrent API clients (0: none)")
    parser.add_argument("--calls", type=int, default=10, help="calls per concurrent client")
    args = parser.parse_args()

    flush_denormals()
    torch.set_num_threads(1)  # as python -m lit_transfer demo
    from gradio_client import Client, handle_file

    from lit_transfer.demo.app import Demo
    from lit_transfer.demo.inference import load_model
    from lit_transfer.demo.runs import pick_pair

    print(f"test images from {DATA_DIR}" if (DATA_DIR / "MNIST").is_dir() else "no MNIST found: drawn test images")
    source, target = pick_pair(args.runs, args.source, args.target)
    demo = Demo(load_model(source), load_model(target), runs_root=args.runs)
    command = [sys.executable, "-m", "lit_transfer", "demo", "--source", str(source), "--target", str(target)]
    server = subprocess.Popen(
        [*command, "--runs", args.runs, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    record: dict = {}
    try:
        url = next(m.group(1) for line in server.stdout if (m := re.search(r"serving on (http://\S+)", line)))
        threading.Thread(target=server.stdout.read, daemon=True).start()  # drained: a full pipe would block it
        with tempfile.TemporaryDirectory() as tmp:
            images = test_images(Path(tmp))
            state = {**demo.start, "image": None}
            if args.requests:
                record["handler"] = summary(timed(lambda: demo.on_file(str(images[0]), state), args.requests))
            if args.clients:  # issue 37's load: 20 test digits as 56x56 PNGs
                digits = test_images(Path(tmp) / "digits", n=20, size=56)
                record["concurrent"] = concurrent(url, digits, args.clients, args.calls, Path(tmp))
            for download in (False, True) if args.requests else ():
                client = Client(url, verbose=False, download_files=tmp if download else False)
                send = lambda c=client: c.predict(handle_file(str(images[0])), api_name="/predict_file")  # noqa: E731
                record["api_with_downloads" if download else "api"] = summary(timed(send, args.requests))
            if args.browser:
                for what, times in browser_times(url, images, max(10, args.requests // 5)).items():
                    record[f"browser_{what}"] = summary(times)
    finally:
        server.terminate()
        server.wait(timeout=30)
    record |= {
        "source": str(source),
        "target": str(target),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradio": __import__("gradio").__version__,
        "load_average_after": os.getloadavg(),  # the machine is shared
    }
    print("RESULT " + json.dumps(record), flush=True)
    for key, value in record.items():
        if key == "concurrent":
            print(
                f"{key:>20}: {value['answered_whole']} of {value['asked']} answered whole, "
                f"p50 {value['p50_ms']:.0f} ms, p95 {value['p95_ms']:.0f} ms; {value['failures'] or 'no failures'}"
            )
        elif isinstance(value, dict):
            median, p90 = value["median_ms"], value["p90_ms"]
            print(f"{key:>20}: median {median:6.1f} ms, p90 {p90:6.1f} ms ({value['n']} requests)")


if __name__ == "__main__":
    main()
