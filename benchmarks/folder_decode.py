"""An image folder's first run (decoding) and its cached start: 60,000 PNGs written from MNIST's training IDX file.

    python benchmarks/folder_decode.py [--repeats 3] [--data_dir ../shared/data]

Writes the folder (``<tmp>/train/<digit>/<index>.png``, 28x28 grey, so the image rule takes them as they are) into a
temporary directory, deleted at the end. Then, per repeat, with an empty cache folder each time:

- ``decode``: ``lit_transfer.folder.decode_files`` over the 60,000 files in this process (what lit_transfer does),
  and the same split over one ``spawn``-ed worker process per core (why it does not use them; ``fork``-ed workers
  hung in ``torch.set_num_threads`` in the child, the known hazard of forking a process whose OpenMP threads run);
- ``first run``: ``python -m lit_transfer fit`` on the folder in a fresh process, seconds from its start to its first
  training step (the cache is empty: listing, decoding and writing the cache included);
- ``cached run``: the same command again (the cache filled): seconds to the first training step;
- ``IDX run``: the same command on ``--data.dataset mnist`` (the IDX files), for comparison.

Prints each repeat and the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lit_transfer, not an installed one
STAMP = "LIT_TRANSFER_FIRST_STEP_FILE"  # where the callback writes the wall time of the first training step


class FirstStep(L.Callback):
    """Writes ``time.time()`` at the first training batch into the file named by ``$LIT_TRANSFER_FIRST_STEP_FILE``."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            Path(os.environ[STAMP]).write_text(repr(time.time()))


def decode_chunk(paths: list[str]) -> bytes:
    from lit_transfer.folder import decode_files

    return decode_files(paths)[0].numpy().tobytes()


def decode_in_processes(files: list[str], method: str) -> None:
    workers = os.cpu_count() or 1
    size = -(-len(files) // (workers * 4))
    with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
        list(pool.map(decode_chunk, [files[s : s + size] for s in range(0, len(files), size)]))


def write_folder(data_dir: str, root: Path) -> int:
    from PIL import Image
    from torchvision.datasets import MNIST

    data = MNIST(data_dir, train=True, download=False)
    for digit in range(10):
        (root / "train" / str(digit)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(data.data.numpy(), data.targets.tolist(), strict=True)):
        Image.fromarray(image).save(root / "train" / str(label) / f"{i:05d}.png")
    return len(data.targets)


def seconds_to_first_step(args: list[str], work: Path) -> float:
    stamp = work / "first_step.txt"
    stamp.unlink(missing_ok=True)
    env = {**os.environ, STAMP: str(stamp), "PYTHONPATH": f"{REPO / 'benchmarks'}:{REPO}"}
    command = [sys.executable, "-m", "lit_transfer", "fit", "--config=configs/pretrain.yaml", *args]
    command += ["--trainer.callbacks+=folder_decode.FirstStep", "--trainer.max_steps=1"]
    command += ["--trainer.limit_val_batches=0", "--trainer.limit_test_batches=1"]
    command += ["--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]
    command += [f"--trainer.default_root_dir={work / 'runs'}"]
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return float(stamp.read_text()) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    options = parser.parse_args()
    from lit_transfer.folder import decode_files
    from lit_transfer.speed.cpu import flush_denormals

    flush_denormals()
    work = Path(tempfile.mkdtemp(prefix="folder_decode-"))
    try:
        start = time.perf_counter()
        n = write_folder(options.data_dir, work / "images")
        print(f"wrote {n} PNGs in {time.perf_counter() - start:.1f} s", flush=True)
        files = sorted(str(p) for p in (work / "images" / "train").rglob("*.png"))
        folder = ["--data.dataset=folder", f"--data.data_dir={work / 'images'}"]
        idx = [f"--data.data_dir={options.data_dir}", "--data.download=false"]
        rows: dict[str, list[float]] = {}
        for repeat in range(options.repeats):
            cache = work / f"cache{repeat}"
            start = time.perf_counter()
            decode_files(files)
            rows.setdefault("decode", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            decode_in_processes(files, "spawn")
            rows.setdefault(f"decode, {os.cpu_count()} spawned processes", []).append(time.perf_counter() - start)
            cached = [*folder, f"--data.cache_dir={cache}"]
            rows.setdefault("first run", []).append(seconds_to_first_step(cached, work))
            rows.setdefault("cached run", []).append(seconds_to_first_step(cached, work))
            rows.setdefault("IDX run", []).append(seconds_to_first_step(idx, work))
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()), flush=True)
        for name, values in rows.items():
            print(f"{name}: median {statistics.median(values):.2f} s of {values}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
