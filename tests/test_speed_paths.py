"""The fast paths compute the same thing: on-device index batches, rank sharding, cached frozen features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import common_args, only_run, run_cli

from lit_transfer.data.loader import EpochSampler, TensorBatches


def ten_images() -> TensorBatches:
    """A training loader over 10 one-pixel images whose value is their label, 3 per batch, shuffled with seed 0."""
    images, labels = torch.arange(10).view(10, 1), torch.arange(10)
    return TensorBatches(images, labels, EpochSampler(10, 3, shuffle=True, seed=0))


@pytest.mark.parametrize("size", [10, 11, 37])
def test_training_shards_are_disjoint_padded_and_reshuffled(size: int) -> None:
    shards = [EpochSampler(size, 4, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    first = [s.rank_indices() for s in shards]
    assert len(first[0]) == len(first[1]) == (size + 1) // 2  # equal steps on every rank
    assert set(torch.cat(first).tolist()) == set(range(size))  # every image, padding only wraps around
    if size % 2 == 0:
        assert not set(first[0].tolist()) & set(first[1].tolist())
    for s in shards:
        s.set_epoch(1)
    assert not torch.equal(shards[0].rank_indices(), first[0])  # a new permutation per epoch
    assert len(shards[0]) == -(-len(first[0]) // 4)  # the short last batch is kept


def test_evaluation_shards_are_exact() -> None:
    shards = [EpochSampler(11, 4, shuffle=False, seed=0, rank=r, world_size=2) for r in range(2)]
    together = torch.cat([s.rank_indices() for s in shards]).sort().values
    assert torch.equal(together, torch.arange(11))  # no duplicates: metrics count each test image once
    assert [len(s) for s in shards] == [2, 2]


def test_loader_resumes_mid_epoch_where_it_stopped() -> None:
    loader = ten_images()
    loader.sampler.set_epoch(2)
    it = iter(loader)
    seen = [next(it)[1] for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_done": 2}
    rest = [b[1] for b in it]
    fresh = ten_images()
    fresh.load_state_dict(state)
    assert [b.tolist() for b in (y for _, y in fresh)] == [b.tolist() for b in rest]
    assert sorted(torch.cat(seen + rest).tolist()) == list(range(10))


def test_a_checkpoint_from_the_end_of_an_epoch_skips_nothing_of_the_next() -> None:
    # Saved after the last batch of epoch 2 (batches_done == len): the next epoch is whole, not skipped; a state
    # from the middle skips what was trained, however many batches that was (here all but the last).
    loader = ten_images()
    loader.load_state_dict({"epoch": 2, "batches_done": len(loader)})
    loader.sampler.set_epoch(3)  # Lightning starts the next epoch
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == list(range(10))
    loader.load_state_dict({"epoch": 2, "batches_done": len(loader) - 1})
    assert len(list(loader)) == 1


def test_a_checkpoint_before_the_first_batch_resumes_from_the_start() -> None:
    # a save at the start of training (a callback's on_train_start, a signal before step 1): nothing trained yet
    fresh = ten_images()
    assert fresh.state_dict() == {"epoch": 0, "batches_done": 0}
    resumed = ten_images()
    resumed.load_state_dict(fresh.state_dict())
    assert sorted(torch.cat([y for _, y in resumed]).tolist()) == list(range(10))


def finetune_weights(mnist_root: Path, runs: Path, name: str, source: Path, *extra: str) -> dict:
    run_cli(
        "fit",
        "--config=configs/finetune.yaml",
        *common_args(mnist_root, runs, name),
        "--trainer.max_epochs=3",
        f"--ckpt_path={source}",
        *extra,
    )
    return torch.load(only_run(runs / name) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def val_losses(run: Path) -> list[str]:
    """The logged per-epoch validation losses, as the CSV logger wrote them (all digits)."""
    rows = (line.split(",") for line in (run / "metrics.csv").read_text().splitlines())
    header = next(rows)
    return [row[header.index("val_loss")] for row in rows if row[header.index("val_loss")]]


@pytest.mark.parametrize("unfreeze", [None, 1], ids=["frozen", "unfrozen-at-epoch-1"])
def test_cached_features_give_the_same_updates(unfreeze, mnist_root: Path, tmp_path: Path, caplog) -> None:
    runs = tmp_path / "runs"
    run_cli("fit", "--config=configs/pretrain.yaml", *common_args(mnist_root, runs, "pre"), "--trainer.max_epochs=1")
    source = only_run(runs / "pre") / "checkpoints" / "last.ckpt"
    extra = [] if unfreeze is None else [f"--trainer.callbacks.unfreeze_at_epoch={unfreeze}"]
    caplog.clear()
    cached = finetune_weights(mnist_root, runs, "cached", source, *extra)
    assert "features of 48 train images are cached" in caplog.text  # the cache was really used
    assert "features of 12 val images are cached" in caplog.text
    caplog.clear()
    plain = finetune_weights(mnist_root, runs, "plain", source, "--speed.feature_cache=false", *extra)
    assert "are cached" not in caplog.text  # the comparison is with a run that computed every batch
    # Bit for bit: the cached output of the deterministic layers equals what each batch would compute.
    for key, value in plain.items():
        assert torch.equal(value, cached[key]), key
    # Validation on cached features (then on images again once unfrozen) logs the very same losses.
    assert len(val_losses(only_run(runs / "cached"))) == 3
    assert val_losses(only_run(runs / "cached")) == val_losses(only_run(runs / "plain"))
    backbone_moved = not torch.equal(
        cached["backbone.conv2.weight"], torch.load(source)["state_dict"]["backbone.conv2.weight"]
    )
    assert backbone_moved == (unfreeze is not None)  # unfrozen: the cache was dropped and the backbone trained
