"""libgomp's wait policy on this machine: lit_transfer's two stages with ``OMP_WAIT_POLICY`` unset, ``PASSIVE``
and ``GOMP_SPINCOUNT=10000``, each a fresh ``python -m lit_transfer fit`` (libgomp reads the variables when torch
loads it), interleaved; prints the training time of each and the medians.

    python benchmarks/wait_policy.py --ckpt <stage one's last.ckpt> [--epochs_one 2] [--repeats 3] [--load 0]

Stage one trains ``--epochs_one`` epochs; stage two its 5 epochs from ``--ckpt``. ``--load N`` runs N busy Python
processes beside them, as on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import REPO, run  # benchmarks/run.py: a command, its stderr in the error if it fails

VARIANTS = {"unset": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"}}


def train_s(variables: dict[str, str], args: list[str], data_dir: str) -> float:
    """A fresh ``fit`` with ``variables`` as the only OpenMP wait settings; its training time (results.json)."""
    root = tempfile.mkdtemp(prefix="lit_transfer_wait_")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | variables
    data = [f"--data.data_dir={data_dir}", "--data.download=false", "--trainer.enable_progress_bar=false"]
    run([sys.executable, "-m", "lit_transfer", "fit", *args, *data, f"--trainer.default_root_dir={root}"], REPO, env)
    return json.loads(next(Path(root).glob("version_*/results.json")).read_text())["train_time_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="stage one's checkpoint, for stage two")
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--epochs_one", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load", type=int, default=0, help="busy processes running beside the training")
    args = p.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    stages = {
        "stage one": ["--config=configs/pretrain.yaml", f"--trainer.max_epochs={args.epochs_one}"],
        "stage two": ["--config=configs/finetune.yaml", f"--ckpt_path={Path(args.ckpt).resolve()}"],
    }
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    times = {(v, s): [] for v in VARIANTS for s in stages}
    try:
        for repeat in range(args.repeats):
            for variant, variables in VARIANTS.items():
                for stage, stage_args in stages.items():
                    times[variant, stage].append(train_s(variables, stage_args, data_dir))
                    print(f"repeat {repeat} {variant} {stage}: {times[variant, stage][-1]:.1f} s", flush=True)
    finally:
        for proc in busy:
            proc.kill()
    for (variant, stage), t in times.items():
        print(f"{variant:22s} {stage}: median {statistics.median(t):6.1f} s  {[round(x, 1) for x in t]}")


if __name__ == "__main__":
    main()
