"""The study's executors compared: the same study sequentially and as Ray tasks at several splits of the machine
(runs at a time x threads per run; runs per GPU), interleaved, each a fresh command in a fresh folder.

    python benchmarks/study_executors.py --data_dir ../shared/data --repeats 3                 # --quick, 2 cores
    python benchmarks/study_executors.py --data_dir ../shared/data --repeats 3 --study heavy --threads 1  # full data
    python benchmarks/study_executors.py --data_dir .data --threads --runs_per_gpu 1 4         # on a GPU machine
    python benchmarks/study_executors.py --study full --repeats 1 --threads 1 --only sequential "ray, 2 x 1 thread(s)"

Per configuration (medians over the repeats): the whole command's wall time (start-up, Ray's included), the sum of
the runs' own wall times (each run's ``done.json``: what a run costs when others share the machine with it), the
median run, and the runs' training time (Lightning's Timer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
STUDIES = {
    # the whole study (configs/study.yaml as it is)
    "full": ["--config", "configs/study.yaml"],
    # every condition, 24 runs of 1 epoch (the README's --quick)
    "quick": ["--config", "configs/study.yaml", "--quick"],
    # full-data runs as in the full study (all ~27,000 training images of 5 digits), 1 epoch: 2 sources, 2 transfers
    "heavy": [
        *("--config", "configs/study.yaml", "--preset", "seed", "--seeds", "2"),
        *("--directions", "[59to04]", "--epochs", "1"),
    ],
}


def configurations(threads: list[int], runs_per_gpu: list[int]) -> dict[str, list[str]]:
    cores = os.cpu_count() or 1
    configs = {"sequential": ["--executor", "sequential"]}  # torch's default threads: every core
    for t in (t for t in threads if t < cores):  # how the runs scale with threads, one at a time
        configs[f"sequential, {t} thread(s)"] = ["--executor", "sequential", f"--threads_per_run={t}"]
    for t in threads:  # CPU runs side by side (on a GPU machine too: --runs_per_gpu 0)
        options = ["--executor", "ray", f"--threads_per_run={t}", "--runs_per_gpu=0"]
        configs[f"ray, {cores // t} x {t} thread(s)"] = options
    for k in runs_per_gpu:
        configs[f"ray, {k} per GPU"] = ["--executor", "ray", f"--runs_per_gpu={k}"]
    return configs


def measure(name: str, study: list[str], options: list[str], data_dir: str, keep: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="lit_transfer_study_bench_"))
    cmd = [sys.executable, "-m", "lit_transfer.study", *study, *options, f"--data_dir={data_dir}", "--download=false",
           f"--out={out}"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in out.glob("runs/**/done.json")]
    results = {
        str(Path(r["run_dir"]).parent): json.loads((out / r["run_dir"] / "results.json").read_text()) for r in records
    }
    train = [r["train_time_s"] for r in results.values()]
    walls = [r["wall_s"] for r in records]
    if not keep:
        shutil.rmtree(out)  # checkpoints and logs of every run: not needed once measured
    return {"config": name, "out": keep and str(out), "command_wall_s": wall, "runs": len(records),
            "sum_run_wall_s": sum(walls), "median_run_wall_s": statistics.median(walls), "sum_train_s": sum(train),
            "test": {run: [r["test_acc"], r["test_loss"]] for run, r in sorted(results.items())}}  # fmt: skip


def environment() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {
        "cpu": next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?"),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "ray": ray_version,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--study", choices=list(STUDIES), default="quick")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="threads per CPU run under Ray (none: none)")
    p.add_argument("--runs_per_gpu", type=int, nargs="*", default=[], help="runs sharing a GPU under Ray")
    p.add_argument("--keep", action="store_true", help="keep each study's folder (report.md, runs) and print it")
    p.add_argument("--only", nargs="*", help="these configurations only, by name (a full study: ~15 min on 2 cores)")
    args = p.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    configs = configurations(args.threads, args.runs_per_gpu)
    if args.only:
        unknown = set(args.only) - set(configs)
        if unknown:
            raise SystemExit(f"--only: unknown configuration(s) {sorted(unknown)}; choose from {list(configs)}")
        configs = {name: options for name, options in configs.items() if name in args.only}
    records = []
    for rep in range(args.repeats):  # interleaved: the noise of a shared machine falls on every configuration
        for name, options in configs.items():
            record = measure(name, STUDIES[args.study], options, data_dir, args.keep)
            record |= {"repeat": rep, "study": args.study}
            print(json.dumps(record), flush=True)
            records.append(record)
    env = environment()
    (HERE / "out").mkdir(exist_ok=True)
    path = HERE / "out" / f"study-executors-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"environment": env, "records": records}, indent=1))
    print(f"\n{env}\n{args.study} study, medians of {args.repeats} (all records: {path})")
    print("| executor | runs | whole command s | speed-up | sum of run walls s | median run s | training s | numbers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    sequential = next(r["test"] for r in records if r["config"] == "sequential")
    base = statistics.median(r["command_wall_s"] for r in records if r["config"] == "sequential")
    for name in configs:
        rs = [r for r in records if r["config"] == name]
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], float)}
        same = "= sequential" if all(r["test"] == sequential for r in rs) else "differ"  # test accuracy and loss
        cells = [f"{med['command_wall_s']:.1f}", f"{base / med['command_wall_s']:.2f}x", f"{med['sum_run_wall_s']:.1f}",
                 f"{med['median_run_wall_s']:.2f}", f"{med['sum_train_s']:.1f}", same]  # fmt: skip
        print(f"| {name} | {rs[0]['runs']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
