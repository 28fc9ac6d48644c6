"""Untrusted checkpoints cannot run code: every load is weights-only, and our own files always load that way."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import pytest
import torch
from helpers import common_args, run_cli

from lit_transfer.checkpoint import MARKER, AtomicCheckpointIO, load_checkpoint
from lit_transfer.command_line.run_dirs import claim_run_dir


class Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self):
        return (Path.touch, (self.proof,))


def evil_checkpoint(path: Path, proof: Path) -> Path:
    state = {"backbone.0.weight": torch.zeros(32, 1, 3, 3)}
    torch.save({"state_dict": state, MARKER: {"format": 1, "digits": [5]}, "extra": Payload(proof)}, path)
    return path


def test_the_payload_works_with_an_unsafe_load(tmp_path: Path) -> None:
    proof = tmp_path / "pwned"
    torch.load(evil_checkpoint(tmp_path / "evil.ckpt", proof), weights_only=False)
    assert proof.exists()  # so its absence below means something


@pytest.mark.parametrize(
    "how",
    [
        ["fit", "--config=configs/finetune.yaml", "--ckpt_path={evil}"],
        ["fit", "--config=configs/finetune.yaml", "--model.init_from={evil}"],
        ["test", "--config=configs/pretrain.yaml", "--ckpt_path={evil}"],
    ],
    ids=["fit-ckpt_path", "init_from", "test-ckpt_path"],
)
def test_crafted_checkpoint_is_refused_and_never_runs(how, mnist_root: Path, tmp_path: Path, capsys) -> None:
    proof = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", proof)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*[a.format(evil=evil) for a in how], *common_args(mnist_root, tmp_path / "runs", "x"))
    message = str(exit_info.value.code)
    assert "refused to load" in message and "could run code" in message and "\n" not in message
    assert not proof.exists()


def test_our_checkpoints_hold_only_plain_values(mnist_root: Path, tmp_path: Path) -> None:
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, tmp_path / "runs", "x"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
    )
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    checkpoint = load_checkpoint(last)  # weights-only: raises if anything but tensors and plain values
    assert checkpoint["hyper_parameters"]["num_classes"] == 5
    assert checkpoint[MARKER]["frozen_stage"] is True


def test_atomic_save_replaces_whole_files_only(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, target)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        io.save_checkpoint({"a": lambda: None}, target)  # fails while writing the temporary file
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _claim(root: str, barrier, queue) -> None:
    import os

    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    Path(root).mkdir(parents=True, exist_ok=True)
    barrier.wait()  # all processes list the folder and claim at the same moment
    queue.put(str(claim_run_dir(root)))


def test_runs_started_together_never_share_a_folder(tmp_path: Path) -> None:
    # 8 processes released together by a barrier, 10 rounds: they all see the same free version_<n> and race for
    # it; a claim that is not atomic (mkdir with exist_ok) hands the same folder to several of them.
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        root = tmp_path / f"runs{round_}"
        queue, barrier = ctx.Queue(), ctx.Barrier(8)
        procs = [ctx.Process(target=_claim, args=(str(root), barrier, queue)) for _ in range(8)]
        for p in procs:
            p.start()
        claimed = [queue.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(30)
        assert len(set(claimed)) == 8, sorted(claimed)
        assert sorted(p.name for p in root.iterdir()) == sorted(f"version_{i}" for i in range(8))
