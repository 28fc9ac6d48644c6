"""One command for the speed comparison: lit_transfer's two stages with the default configs, and in the same run
the REFERENCE implementations doing the same work, repeated; prints medians and saves every measurement.

    python benchmarks/run.py --data_dir ../shared/data --repeats 3

Each implementation runs in its own fresh process, in turns (ours, plain loop + FTZ, plain loop, Lightning +
DataLoader), so the noise of a shared machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class BenchmarkFailed(Exception):
    pass


def run(cmd: list[str], cwd: Path) -> tuple[str, float]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise BenchmarkFailed(f"benchmark command failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done.stdout, wall


def ours(data_dir: str, extra: list[str], label: str = "lit_transfer") -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="lit_transfer_bench_"))
    common = [f"--data.data_dir={data_dir}", "--data.download=false", "--trainer.enable_progress_bar=false", *extra]
    py = [sys.executable, "-m", "lit_transfer", "fit"]
    _, wall1 = run([*py, "--config=configs/pretrain.yaml", f"--trainer.default_root_dir={root / 'a'}", *common], REPO)
    first = json.loads(next((root / "a").glob("version_*/results.json")).read_text())
    _, wall2 = run(
        [
            *py,
            "--config=configs/finetune.yaml",
            f"--trainer.default_root_dir={root / 'b'}",
            *common,
            f"--ckpt_path={first['checkpoint']}",
        ],
        REPO,
    )
    second = json.loads(next((root / "b").glob("version_*/results.json")).read_text())
    return [record(label, "stage_one", first, wall1), record(label, "stage_two", second, wall2)]


def ours_one_process(data_dir: str, extra: list[str]) -> list[dict]:
    """Both stages from one ``python -m lit_transfer.study`` process (one start-up instead of two), with the
    seed and the settings of the default configs; its runs are the CLI's ``fit`` with ``--model.init_from``."""
    root = Path(tempfile.mkdtemp(prefix="lit_transfer_bench_"))
    study = [sys.executable, "-m", "lit_transfer.study", "--preset=seed", "--seeds=[0]", "--directions=[59to04]"]
    _, wall = run(
        [*study, f"--data_dir={data_dir}", "--download=false", f"--out={root}", f"--extra_args={json.dumps(extra)}"],
        REPO,
    )
    records = []
    for stage, condition in (("stage_one", "pretrain"), ("stage_two", "transfer_frozen")):
        done = json.loads((root / "runs/59to04" / condition / "labelsall/seed0/done.json").read_text())
        results = json.loads((root / done["run_dir"] / "results.json").read_text())
        records.append(record("lit_transfer, one process", stage, results, wall / 2))  # one process: half each
    return records


def record(impl: str, stage: str, results: dict, wall: float) -> dict:
    """One stage's measurement from lit_transfer's ``results.json``."""
    keep = ("train_time_s", "images_per_s", "test_acc", "peak_rss_mb", "peak_gpu_mb")
    return {"impl": impl, "stage": stage, "command_wall_s": wall, **{k: results[k] for k in keep}}


def reference(script: str, data_dir: str, extra: list[str]) -> list[dict]:
    out, wall = run([sys.executable, str(HERE / script), f"--data_dir={data_dir}", *extra], HERE)
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    for r in records:
        r["command_wall_s"] = wall / len(records)  # one process for both stages
    return records


def gpu_mb(records: list[dict]) -> str:
    values = [r["peak_gpu_mb"] for r in records if r.get("peak_gpu_mb") is not None]
    return f"{statistics.median(values):,.0f}" if values else "-"


def environment() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--only",
        nargs="*",
        default=["ours", "plain_ftz", "plain", "lightning"],
        choices=[
            "ours",
            "ours_one_process",
            "ours_eager",
            "ours_bar",
            "plain_ftz",
            "plain",
            "lightning",
        ],
        help="ours_one_process: both stages in one process (python -m lit_transfer.study --preset seed ...); "
        "ours_eager: lit_transfer with --speed.cuda_graphs=false; ours_bar: with the progress bar users see",
    )
    p.add_argument("--ours_args", nargs="*", default=[], help="extra CLI arguments for lit_transfer")
    args = p.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    impls = {
        "ours": lambda: ours(data_dir, args.ours_args),
        "ours_one_process": lambda: ours_one_process(data_dir, args.ours_args),
        "ours_eager": lambda: ours(data_dir, [*args.ours_args, "--speed.cuda_graphs=false"], "lit_transfer, eager"),
        "ours_bar": lambda: ours(
            data_dir, [*args.ours_args, "--trainer.enable_progress_bar=true"], "lit_transfer, progress bar on"
        ),
        "plain_ftz": lambda: reference("reference_plain.py", data_dir, ["--ftz"]),
        "plain": lambda: reference("reference_plain.py", data_dir, []),
        "lightning": lambda: reference("reference_lightning.py", data_dir, []),
    }
    records: list[dict] = []
    failed: list[str] = []
    for rep in range(args.repeats):
        for name in args.only:
            try:
                new = impls[name]()
            except BenchmarkFailed as err:  # the others still run: one broken path must not hide the rest
                print(err, flush=True)
                failed.append(name)
                continue
            for r in new:
                r["repeat"] = rep
                print(json.dumps(r), flush=True)
            records.extend(new)
    env = environment()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"environment": env, "records": records}, indent=1))
    print(f"\n{env}\nmedians of {args.repeats} runs (all records: {path})")
    print("| implementation | stage | train s | images/s | test acc | peak RSS MB | peak GPU MB | whole command s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for impl in dict.fromkeys(r["impl"] for r in records):
        for stage in ("stage_one", "stage_two"):
            rs = [r for r in records if r["impl"] == impl and r["stage"] == stage]
            if not rs:
                continue
            keys = ("train_time_s", "images_per_s", "test_acc", "peak_rss_mb", "command_wall_s")
            med = {k: statistics.median(r[k] for r in rs) for k in keys}
            cells = [
                f"{med['train_time_s']:.1f}",
                f"{med['images_per_s']:,.0f}",
                f"{100 * med['test_acc']:.2f}%",
                f"{med['peak_rss_mb']:,.0f}",
                gpu_mb(rs),
                f"{med['command_wall_s']:.1f}",
            ]
            print(f"| {impl} | {stage} | " + " | ".join(cells) + " |")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
