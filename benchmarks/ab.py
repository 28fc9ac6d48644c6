"""Interleaved A/B of the notebook's two stages: this checkout against another commit, in turns, same machine.

    python benchmarks/ab.py --base 0458ebf --repeats 3 --data_dir ../shared/data [--reverse]

The base commit is checked out into a temporary git worktree and run from there (``python -m lit_transfer`` in
that folder imports that folder's package). Per stage it prints the median training time (Lightning's ``Timer``)
and whole-command wall time of each side, and every run's test accuracy and loss, which must agree to the digit
when only speed or layout changed, and whether stage one's weights are the same to the bit on both sides.
``--reverse`` runs the notebook's exercise (configs/reverse_*.yaml). Every measurement goes to
``benchmarks/out/ab-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def stages(checkout: Path, data_dir: str, out: Path, extra: list[str], prefix: str = "") -> list[dict]:
    common = [f"--data.data_dir={data_dir}", "--data.download=false", "--trainer.enable_progress_bar=false", *extra]
    py = [sys.executable, "-m", "lit_transfer", "fit"]
    records, ckpt = [], []
    for name, config in (("pretrain", f"{prefix}pretrain"), ("finetune", f"{prefix}finetune")):
        cmd = [*py, f"--config=configs/{config}.yaml", f"--trainer.default_root_dir={out / name}", *common, *ckpt]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=checkout, check=True, capture_output=True)
        wall = time.perf_counter() - start
        results = json.loads(next((out / name).glob("version_*/results.json")).read_text())
        ckpt = [f"--ckpt_path={results['checkpoint']}"]
        keys = ("train_time_s", "test_acc", "test_loss", "peak_rss_mb")
        records.append(
            {"stage": name, "wall_s": wall, "checkpoint": results["checkpoint"], **{k: results[k] for k in keys}}
        )
    return records


def same_weights(first: str, second: str) -> bool:
    import torch  # only here: the timed runs are subprocesses

    a, b = (torch.load(path, map_location="cpu", weights_only=True)["state_dict"] for path in (first, second))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--reverse", action="store_true", help="the reverse experiment (configs/reverse_*.yaml)")
    parser.add_argument(
        "--extra", action="append", default=[], help="a fit option for both sides, e.g. --extra=--trainer.max_epochs=1"
    )
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())  # the base runs in another folder
    tmp = Path(tempfile.mkdtemp(prefix="lit_transfer_ab_"))
    base = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True)
    sides = {"head": REPO, args.base: base}
    runs: list[dict] = []
    try:
        for repeat in range(args.repeats):
            for side, checkout in sides.items():
                prefix = "reverse_" if args.reverse else ""
                for record in stages(checkout, data_dir, tmp / f"{side}-{repeat}", args.extra, prefix):
                    runs.append({"side": side, "repeat": repeat, **record})
                    print(json.dumps(runs[-1]), flush=True)
        firsts = [r["checkpoint"] for r in runs if r["repeat"] == 0 and r["stage"] == "pretrain"]
        print(f"stage one's weights bit-identical on both sides: {same_weights(*firsts)}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    for stage in ("pretrain", "finetune"):
        for side in sides:
            mine = [r for r in runs if r["side"] == side and r["stage"] == stage]
            train = statistics.median(r["train_time_s"] for r in mine)
            wall = statistics.median(r["wall_s"] for r in mine)
            accs = sorted({f"{100 * r['test_acc']:.2f}%" for r in mine})
            print(f"{stage:9s} {side:8s} training {train:6.1f} s  whole command {wall:6.1f} s  accuracy {accs}")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / f"ab-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
