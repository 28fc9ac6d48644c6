"""The demo page's Teach tab, measured: time to teach and both models' held-out accuracy on drawn symbols.

For each seed: ``--per-class`` examples of each symbol (+, -, x drawn by program with a hand's jitter, as the page's
drawing pad draws them, then the image rule of ``lit_transfer/images/rule.py``) are taught, as the page does, to stage
one's frozen features with a new head and to the same network from scratch (``lit_transfer/demo/teach.py``); both
are then asked about ``--test-per-class`` other drawings of each symbol. Also timed: the page's held-out estimate by
cross-validation (what it shows when the user drew no test examples). One torch thread, as the page runs.

    python benchmarks/teach.py --source runs/pretrain/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's lit_transfer; the symbols the tests draw

from symbols import picture, strokes  # noqa: E402

from lit_transfer.speed.cpu import flush_denormals  # noqa: E402

SETS = {  # as benchmarks/web_teach.py
    "+ - x": ["plus", "minus", "times"],
    "L T Z": ["L", "T", "Z"],
    "all six": ["plus", "minus", "times", "L", "T", "Z"],
}


def drawn(symbols: list[str], per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from lit_transfer.images.rule import to_mnist

    rng = random.Random(seed)
    images = [to_mnist(picture(strokes(name, rng))) for name in symbols for _ in range(per_class)]
    return torch.stack(images), torch.arange(len(symbols)).repeat_interleave(per_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="stage one's checkpoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--symbols", choices=list(SETS), default="+ - x")
    parser.add_argument("--no-cv", action="store_true", help="skip timing the page's cross-validated estimate")
    args = parser.parse_args()
    flush_denormals()
    torch.set_num_threads(1)  # as the page (lit_transfer/demo/serve.py)
    import lightning
    from lightning.pytorch.utilities import disable_possible_user_warnings

    from lit_transfer.demo import teach

    disable_possible_user_warnings()
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"Python {platform.python_version()}, torch {torch.__version__}, Lightning {lightning.__version__}")
    symbols = SETS[args.symbols]
    print(f"stage one: {args.source}; {args.per_class} examples x {len(symbols)} classes ({args.symbols}); "
          f"{teach.STEPS} steps")  # fmt: skip
    rows = []
    for seed in args.seeds:
        data = teach.Examples(*drawn(symbols, args.per_class, seed), symbols)
        test = drawn(symbols, args.test_per_class, 1000 + seed)
        taught = teach.teach(data, args.source, seed=seed)
        teach.held_out(taught, data, args.source, test, seed=seed)
        row = {
            "seed": seed,
            "transferred_s": taught.seconds["transferred"],
            "scratch_s": taught.seconds["scratch"],
            **{f"{k}_acc": c / taught.held_out for k, c in taught.correct.items()},
        }
        said = ""
        if not args.no_cv:
            start = time.perf_counter()
            estimate = teach.Taught(symbols, taught.transferred, taught.scratch, taught.seconds)
            teach.held_out(estimate, data, args.source, seed=seed)
            row["cv_s"] = time.perf_counter() - start
            row.update({f"{k}_cv": c / estimate.held_out for k, c in estimate.correct.items()})
            said = (f"; page's {estimate.estimate} {100 * row['transferred_cv']:.1f}% / "
                    f"{100 * row['scratch_cv']:.1f}% in {row['cv_s']:.2f} s")  # fmt: skip
        rows.append(row)
        print(
            f"seed {seed}: fit transferred {row['transferred_s']:.2f} s, from scratch {row['scratch_s']:.2f} s; "
            f"held-out accuracy ({taught.held_out} drawings) transferred {100 * row['transferred_acc']:.1f}%, "
            f"from scratch {100 * row['scratch_acc']:.1f}%{said}",
            flush=True,
        )
    for key in rows[0]:
        if key != "seed":
            values = [r[key] for r in rows]
            mean = statistics.fmean(values)
            spread = f", mean {mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            low, high = min(values), max(values)
            print(f"median {key}: {statistics.median(values):.3f} (min {low:.3f}, max {high:.3f}{spread})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
