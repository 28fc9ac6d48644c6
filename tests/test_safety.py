"""Untrusted checkpoints cannot run code: every load is weights-only, and our own files always load that way. Run
folders are never shared, and the ``latest`` link never goes missing nor replaces a file of the user's."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import common_args, run_cli

from lit_transfer.checkpoint import MARKER, AtomicCheckpointIO, load_checkpoint
from lit_transfer.command_line.run_dirs import RUN_DIR_ENV, claim_run_dir, point_latest
from lit_transfer.errors import UserError


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


def test_the_refusal_names_what_the_file_refers_to_and_other_files_what_they_are(tmp_path: Path) -> None:
    evil = evil_checkpoint(tmp_path / "evil.ckpt", tmp_path / "pwned")
    with pytest.raises(UserError) as err:
        load_checkpoint(evil)
    assert str(err.value) == (
        f"refused to load {evil}: it refers to getattr, which could run code when unpickled; "
        "only checkpoints written by lit_transfer (tensors and plain values) can be loaded"
    )
    broken = tmp_path / "broken.ckpt"  # a zip archive, as torch.save writes, that torch cannot read
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(UserError) as err:
        load_checkpoint(broken)
    assert str(err.value) == (
        f"{broken} is not a readable PyTorch checkpoint (RuntimeError): pass a .ckpt file written by lit_transfer"
    )
    tensor = tmp_path / "tensor.pt"  # a readable torch file, but not a checkpoint
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(UserError) as err:
        load_checkpoint(tensor)
    assert str(err.value) == f"{tensor} is not a lit_transfer checkpoint: pass a .ckpt file written by lit_transfer"


def test_every_load_asks_torch_for_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch 2.4 and 2.5, which pyproject.toml allows, load everything unless asked not to (2.6 changed the default)
    asked: list[dict] = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: asked.append(kwargs) or load(*args, **kwargs))
    path = tmp_path / "ours.ckpt"
    torch.save({"state_dict": {}, MARKER: {"format": 1}}, path)
    load_checkpoint(path)
    AtomicCheckpointIO().load_checkpoint(path)
    assert [(kwargs.get("weights_only"), kwargs.get("map_location")) for kwargs in asked] == [(True, "cpu")] * 2


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
        "--ckpt_path=null",  # random features: no stage one needed
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


def _read_latest(root: str, stop, queue) -> None:
    missing = 0
    while not stop.is_set():
        try:
            os.readlink(Path(root) / "latest")
        except FileNotFoundError:
            missing += 1
    queue.put(missing)


def test_latest_follows_each_finished_run_and_is_never_missing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = claim_run_dir(root)
    point_latest(first)
    second = claim_run_dir(root)
    assert second.name == "version_1"  # the link takes no version number
    # Another process reads the link while it is pointed back and forth: a swap that removed the old link before
    # placing the new one would leave moments without any.
    ctx = multiprocessing.get_context("fork")
    stop, queue = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read_latest, args=(str(root), stop, queue))
    reader.start()
    for _ in range(500):
        point_latest(second)
        point_latest(first)
    point_latest(second)
    stop.set()
    missing = queue.get(timeout=30)
    reader.join(30)
    os.environ.pop(RUN_DIR_ENV, None)  # claim_run_dir's note for DDP workers
    assert missing == 0
    assert os.readlink(root / "latest") == "version_1"  # relative: the runs folder can move
    assert sorted(p.name for p in root.iterdir()) == ["latest", "version_0", "version_1"]  # no temporary left


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_users_own_latest_is_left_as_it_is(kind: str, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    root = tmp_path / "runs"
    mine = root / "latest"
    if kind == "folder":
        mine.mkdir(parents=True)
        (mine / "notes.txt").write_text("mine")
    else:
        root.mkdir()
        mine.write_text("mine")
    run = claim_run_dir(root)
    os.environ.pop(RUN_DIR_ENV, None)
    assert run.name == "version_0"
    point_latest(run)
    assert not mine.is_symlink() and (mine / "notes.txt" if kind == "folder" else mine).read_text() == "mine"
    assert caplog.text.count(f"{mine} is not a link: left as it is, not pointed at version_0") == 1
