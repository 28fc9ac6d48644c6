"""The training metrics' device sums: per-image means across uneven batches, summed across processes, in place."""

import torch

from lit_transfer.speed.epoch_sums import EpochSums


def test_epoch_means_weight_each_batch_by_its_images_and_reset_in_place() -> None:
    sums = EpochSums().to(torch.device("cpu"))
    storage = sums.sums
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    sums.update(logits, torch.tensor([0, 1, 1, 1]), torch.tensor(0.5))  # 3 of 4 right
    sums.update(logits[:2], torch.tensor([1, 1]), torch.tensor(2.0))  # 1 of 2 right
    loss, acc = sums.compute(lambda t: t)
    assert torch.isclose(loss, torch.tensor((0.5 * 4 + 2.0 * 2) / 6))
    assert torch.isclose(acc, torch.tensor(4 / 6))
    # another process's sums ([2 correct, loss 1.0 x 4 images, 4 images]) added by the reduction
    other = torch.tensor([2.0, 4.0, 4.0])
    both = sums.compute(lambda t: t + other)
    assert torch.isclose(both[0], torch.tensor((0.5 * 4 + 2.0 * 2 + 4.0) / 10))
    assert torch.isclose(both[1], torch.tensor(6 / 10))
    sums.reset()
    assert sums.sums is storage and not storage.any()  # the same tensor, zeroed: a graph still writes to it
