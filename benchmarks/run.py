"""One command for the speed comparison: lit_transfer's two stages with the default configs, and in the same run
the REFERENCE implementations doing the same work, repeated; prints medians and saves every measurement.

    python benchmarks/run.py --data_dir ../shared/data --repeats 3

Each implementation runs in its own fresh process, in turns (ours, plain loop + FTZ, plain loop, Lightning +
DataLoader), so the noise of a shared machine falls on all of them alike. Each repeat starts with
``benchmarks/floor.py`` (its own process): the GEMM peak measured now, in fp32 and in bf16 where the CPU has it,
so that every stage is shown as a multiple of its floor, the training FLOP at that peak.
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
VAL_SIZE = 0.1  # the configs' and the references' validation split: stage two caches 1 / (1 - 0.1) x its images


class BenchmarkFailed(Exception):
    pass


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    """``cmd``'s output and wall time; ``env``: the environment to start from (default: this process's)."""
    env = {**(os.environ if env is None else env), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise BenchmarkFailed(f"benchmark command failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done.stdout, wall


def ours(data_dir: str, extra: list[str], label: str = "lit_transfer") -> tuple[list[dict], float]:
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
    return [record(label, "stage_one", first, wall1), record(label, "stage_two", second, wall2)], wall1 + wall2


def ours_one_process(data_dir: str, extra: list[str]) -> tuple[list[dict], float]:
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
        records.append(record("lit_transfer, one process", stage, results, None))  # one process for both
    return records, wall


def record(impl: str, stage: str, results: dict, wall: float | None) -> dict:
    """One stage's measurement from lit_transfer's ``results.json`` (``wall``: the stage's own command, if any)."""
    keep = ("train_time_s", "images_per_s", "test_acc", "peak_rss_mb", "peak_gpu_mb", "precision")
    return {"impl": impl, "stage": stage, "command_wall_s": wall, **{k: results[k] for k in keep}}


def reference(script: str, data_dir: str, extra: list[str]) -> tuple[list[dict], float]:
    """A reference script's records and its wall time, which covers both stages: they run in one process (the
    time is not split between them: start-up and data loading are not half each)."""
    out, wall = run([sys.executable, str(HERE / script), f"--data_dir={data_dir}", *extra], HERE)
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    for r in records:
        r.update(command_wall_s=None, precision="32-true")
    return records, wall


def floor() -> dict:
    """``benchmarks/floor.py`` in its own process: FLOP per training image and the GEMM peak, measured now."""
    out, _ = run([sys.executable, str(HERE / "floor.py")], REPO)
    return json.loads(out.splitlines()[-1])


def floor_s(r: dict, floors: list[dict], feature_pass: bool = False) -> float | None:
    """The training time of record ``r``'s images at the GEMM peak of its precision (median over the repeats).
    ``feature_pass``: stage two's floor with the frozen backbone's one forward over every image it caches added
    (training and validation images, once): work any implementation of stage two must do at least once."""
    peaks = [f["gemm_peak_flops"].get(r["precision"]) for f in floors]
    if None in peaks or not peaks:
        return None  # e.g. bf16 on a CPU without native bf16: no bf16 peak was measured
    images = r["images_per_s"] * r["train_time_s"]  # epochs x training images
    flop = images * floors[0]["flop_per_image"][r["stage"]]
    if feature_pass:
        if "feature_pass" not in floors[0]["flop_per_image"] or "epochs" not in r:
            return None  # records saved before it was counted
        flop += images / r["epochs"] / (1 - VAL_SIZE) * floors[0]["flop_per_image"]["feature_pass"]
    return flop / statistics.median(peaks)


def gpu_mb(records: list[dict]) -> str:
    values = [r["peak_gpu_mb"] for r in records if r.get("peak_gpu_mb") is not None]
    return f"{statistics.median(values):,.0f}" if values else "-"


def environment() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_tile")
    return {
        "cpu": cpu,
        "cpu_flags": [f for f in wanted if f in flags],
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
            "ours_bar",
            "ours_bf16",
            "plain_ftz",
            "plain",
            "lightning",
        ],
        help="ours_one_process: both stages in one process (python -m lit_transfer.study --preset seed ...); "
        "ours_bar: with the progress bar users see; "
        "ours_bf16: with --trainer.precision=bf16-mixed",
    )
    p.add_argument("--ours_args", nargs="*", default=[], help="extra CLI arguments for lit_transfer")
    p.add_argument("--epochs", type=int, default=5, help="epochs per stage, for every implementation (configs: 5)")
    p.add_argument("--table", metavar="JSON", help="print the table of a run's saved records (benchmarks/out/...)")
    args = p.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(f"{saved['environment']}\n{floor_summary(saved['floors'])}\n{table(saved['records'], saved['floors'])}")
        return
    data_dir = str(Path(args.data_dir).resolve())
    args.ours_args = [f"--trainer.max_epochs={args.epochs}", *args.ours_args]
    epochs = [f"--epochs={args.epochs}"]
    impls = {
        "ours": lambda: ours(data_dir, args.ours_args),
        "ours_one_process": lambda: ours_one_process(data_dir, args.ours_args),
        "ours_bar": lambda: ours(
            data_dir, [*args.ours_args, "--trainer.enable_progress_bar=true"], "lit_transfer, progress bar on"
        ),
        "ours_bf16": lambda: ours(data_dir, [*args.ours_args, "--trainer.precision=bf16-mixed"], "lit_transfer"),
        "plain_ftz": lambda: reference("reference_plain.py", data_dir, [*epochs, "--ftz"]),
        "plain": lambda: reference("reference_plain.py", data_dir, epochs),
        "lightning": lambda: reference("reference_lightning.py", data_dir, epochs),
    }
    records: list[dict] = []
    floors: list[dict] = []
    failed: list[str] = []
    env = environment()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for rep in range(args.repeats):
        floors.append({**floor(), "loadavg": os.getloadavg()})  # first in each repeat: the machine's load now
        print(json.dumps({"floor": floors[-1], "repeat": rep}), flush=True)
        for name in args.only:
            try:
                new, wall = impls[name]()
            except BenchmarkFailed as err:  # the others still run: one broken path must not hide the rest
                print(err, flush=True)
                failed.append(name)
                continue
            for r in new:
                r.update(repeat=rep, both_stages_wall_s=wall, key=name, epochs=args.epochs)
                print(json.dumps(r), flush=True)
            records.extend(new)
        # saved after every repeat: an interrupted run keeps what it measured (--table prints it)
        path.write_text(json.dumps({"environment": env, "floors": floors, "records": records}, indent=1))
    print(f"\n{env}\nmedians of {args.repeats} runs (all records: {path})")
    print(floor_summary(floors))
    print(table(records, floors))
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


def floor_summary(floors: list[dict]) -> str:
    flop = floors[0]["flop_per_image"]
    peaks = {p: statistics.median(f["gemm_peak_flops"][p] for f in floors) for p in floors[0]["gemm_peak_flops"]}
    each = ", ".join(f"{p} {v / 1e9:,.0f} GFLOP/s" for p, v in peaks.items())
    return (
        f"floor: training FLOP at the GEMM peak measured in this run (torch.mm, median of {len(floors)}: {each}); "
        f"forward + backward per image: stage one {flop['stage_one'] / 1e6:.2f} MFLOP, "
        f"stage two {flop['stage_two'] / 1e6:.2f} MFLOP (the head on cached features)"
        + (
            f"; stage two's feature pass {flop['feature_pass'] / 1e6:.2f} MFLOP per cached image"
            if "feature_pass" in flop
            else ""
        )
    )


def table(records: list[dict], floors: list[dict]) -> str:
    """One row per implementation: each stage's training time and its multiple of the floor, and the whole
    command(s) for both stages (two commands for lit_transfer, one process for the references)."""
    rows = [
        "| implementation | precision | stage one train s | x floor | stage two train s | x floor | "
        "x floor with the feature pass | test acc one / two | peak RSS MB | peak GPU MB | "
        "both stages, whole command(s) s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in dict.fromkeys(r["key"] for r in records):
        mine = [r for r in records if r["key"] == key]
        cells = [mine[0]["impl"], "/".join(dict.fromkeys(r["precision"] for r in mine))]
        acc, rss = [], []
        for stage in ("stage_one", "stage_two"):
            rs = [r for r in mine if r["stage"] == stage]
            if not rs:
                cells += ["-", "-"] + ["-"] * (stage == "stage_two")
                continue
            train = statistics.median(r["train_time_s"] for r in rs)
            cells.append(f"{train:.1f}")
            for feature_pass in (False, True) if stage == "stage_two" else (False,):
                ratios = [t / f for r in rs if (f := floor_s(r, floors, feature_pass)) and (t := r["train_time_s"])]
                cells.append(f"{statistics.median(ratios):.1f}x" if ratios else "-")
            acc.append(f"{100 * statistics.median(r['test_acc'] for r in rs):.2f}%")
            rss.append(f"{statistics.median(r['peak_rss_mb'] for r in rs):,.0f}")
        walls = {r["repeat"]: r["both_stages_wall_s"] for r in mine}
        cells += [" / ".join(acc), " / ".join(rss), gpu_mb(mine), f"{statistics.median(walls.values()):.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
