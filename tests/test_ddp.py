"""DDP for real: 2 CPU processes (gloo) through both stages, metrics synchronised, one writer."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, common_args, only_run, results, run_cli

pytestmark = pytest.mark.slow


def cli_subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "tests")}
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lit_transfer", *map(str, args)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_ddp_two_cpu_processes_both_stages(mnist_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=2"]
    probe = ["--trainer.callbacks+=probes.RecordTrainSums", f"--trainer.callbacks.folder={tmp_path / 'sums'}"]
    done = cli_subprocess(
        "fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pretrain"), *ddp, *probe
    )
    assert done.stdout.count("== pretrain on digits 56789") == 1  # only rank 0 reports
    pre = only_run(runs / "pretrain")  # the worker process joined rank 0's run directory
    # The logged training loss and accuracy of each epoch are over both processes' images: their sums added.
    with open(pre / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r["train_loss"]]
    assert len(logged) == 2
    for row in logged:
        ranks = [json.loads((tmp_path / "sums" / f"sums-rank{r}-epoch{row['epoch']}.json").read_text()) for r in (0, 1)]
        assert ranks[0] != ranks[1]  # each process saw other images: a sum of one alone would differ
        correct, loss, images = (a + b for a, b in zip(*ranks, strict=True))
        assert images == 48  # 48 training images, 24 per rank (batches of 16 + 8)
        assert float(row["train_loss"]) == pytest.approx(loss / images, rel=1e-5)
        assert float(row["train_acc"]) == pytest.approx(correct / images, rel=1e-5)
    source = pre / "checkpoints" / "last.ckpt"
    cli_subprocess(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "finetune"),
        *ddp,
        f"--ckpt_path={source}",
    )
    fine = only_run(runs / "finetune")
    assert len(list(fine.glob("results*.json"))) == 1
    report = results(fine)
    assert report["world_size"] == 2 and report["stage"] == "finetune"
    # 60 images of 0-4, 12 held out: 48 to train on, 24 per rank, batch 16: 2 steps per epoch (16 + 8 per rank)
    assert report["train_images"] == 2 * 48
    assert report["test_images"] == 20  # synchronised: both ranks' halves of the 20 test images
    after = torch.load(fine / "checkpoints" / "last.ckpt", weights_only=True)
    before = torch.load(source, weights_only=True)
    assert torch.equal(after["state_dict"]["backbone.conv2.weight"], before["state_dict"]["backbone.conv2.weight"])
    assert after["global_step"] == 4
    # The same checkpoint tested in one process gives exactly the synchronised DDP numbers.
    run_cli(
        "test",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, "single"),
        f"--ckpt_path={fine / 'checkpoints' / 'last.ckpt'}",
    )
    single = results(only_run(runs / "single" / "test"))
    assert single["test_acc"] == pytest.approx(report["test_acc"], abs=1e-6)
    assert single["test_loss"] == pytest.approx(report["test_loss"], rel=1e-5)
    assert single["confusion"] == report["confusion"]
    # predict in 2 processes: each writes its share; together they are the single-process predictions
    ckpt = f"--ckpt_path={fine / 'checkpoints' / 'last.ckpt'}"
    cli_subprocess("predict", "--config=configs/finetune.yaml", *common_args(mnist_root, runs, "pred2"), *ddp, ckpt)
    run_cli("predict", "--config=configs/finetune.yaml", *common_args(mnist_root, runs, "pred1"), ckpt)
    parts = sorted(only_run(runs / "pred2" / "predict").glob("predictions-rank*.csv"))
    assert [p.name for p in parts] == ["predictions-rank0.csv", "predictions-rank1.csv"]
    shares = [read_rows(p) for p in parts]
    assert [len(s) for s in shares] == [10, 10]
    assert {**shares[0], **shares[1]} == read_rows(only_run(runs / "pred1" / "predict") / "predictions.csv")


def read_rows(path: Path) -> dict[int, tuple[str, str]]:
    """test_index -> (digit, predicted)"""
    with open(path) as f:
        return {int(r["test_index"]): (r["digit"], r["predicted"]) for r in csv.DictReader(f)}
