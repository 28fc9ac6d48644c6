"""The drop-in layers: ByteDropout (nn.Dropout's distribution and gradient, masks in memory order, exact keep
rates) and GradLayoutFlatten (nn.Flatten's values and gradient, in the input's layout)."""

import pytest
import torch

from lit_transfer.speed.layers import ByteDropout, GradLayoutFlatten, random_bytes_like


def test_random_bytes_are_uniform_in_every_byte_position() -> None:
    torch.manual_seed(0)
    raw = random_bytes_like(torch.empty(1 << 20)).long()
    # chi-square over the 256 values, 255 degrees of freedom: 340 is beyond the 0.9999 quantile (~330)
    counts = torch.bincount(raw, minlength=256).double()
    expected = raw.numel() / 256
    assert ((counts - expected) ** 2 / expected).sum() < 340
    # each byte of a 64-bit draw on its own: a draw with its top bit always 0 fails here (mean ~63.5)
    per_position = raw.view(-1, 8).double().mean(0)
    assert torch.allclose(per_position, torch.full((8,), 127.5, dtype=torch.double), atol=1.0)


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_keeps_one_minus_p_and_scales_like_nn_dropout(p: float) -> None:
    torch.manual_seed(0)
    out = ByteDropout(p).train()(torch.ones(1 << 20))
    scale = torch.tensor(1 / (1 - p)).item()  # in float32, as the output
    assert set(out.unique().tolist()) == {0.0, scale}
    # binomial standard deviation here is ~0.0005: 0.003 is 6 of them
    assert abs((out != 0).double().mean().item() - (1 - p)) < 0.003


def test_gradient_is_the_mask_and_masks_change_between_calls() -> None:
    torch.manual_seed(0)
    dropout = ByteDropout(0.25).train()
    x = torch.randn(64, 32, 12, 12, requires_grad=True)
    out = dropout(x)
    out.sum().backward()
    kept = out != 0
    assert torch.equal(x.grad, kept.float() * (4 / 3))
    assert torch.allclose(out[kept], x[kept] * (4 / 3))
    assert not torch.equal(dropout(x) != 0, kept)


def test_same_seed_same_mask_and_mask_follows_memory_order() -> None:
    """Cached features and images reach the dropout in the same layout: the same seed must give the same mask."""
    x = torch.randn(8, 32, 12, 12)
    dropout = ByteDropout(0.25).train()
    torch.manual_seed(7)
    first = dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)
    # A channels-last tensor gets the mask a contiguous NHWC tensor of the same memory gets.
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    torch.manual_seed(7)
    from_nhwc = dropout(nhwc)
    torch.manual_seed(7)
    from_channels_last = dropout(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(from_channels_last.permute(0, 2, 3, 1), from_nhwc)


def test_other_dtypes_take_torchs_dropout() -> None:
    """bfloat16 (CPU autocast): torch's own dropout, which scales in float32, not a rounded 1/(1-p) mask."""
    x = torch.ones(4096, dtype=torch.bfloat16)
    torch.manual_seed(3)
    ours = ByteDropout(0.25).train()(x)
    torch.manual_seed(3)
    assert torch.equal(ours, torch.nn.functional.dropout(x, 0.25, True))


def test_eval_mode_and_non_dense_inputs() -> None:
    x = torch.rand(512, 1024) + 1  # no zeros, so a dropped element is told apart from a kept one
    assert torch.equal(ByteDropout(0.5).eval()(x), x)
    strided = x[:, ::2]  # not dense: nn.Dropout's own mask, same distribution
    torch.manual_seed(0)
    out = ByteDropout(0.25).train()(strided)
    kept = out != 0
    assert torch.allclose(out[kept], strided[kept] / 0.75)  # kept elements are scaled by 1 / (1 - p)
    # the keep rate is 1 - p: over 262,144 elements the binomial standard deviation is ~0.001
    assert abs(kept.double().mean().item() - 0.75) < 0.006


def test_rates_off_the_byte_grid_take_torchs_dropout() -> None:
    x = torch.ones(4096)
    torch.manual_seed(3)
    ours = ByteDropout(0.3).train()(x)
    torch.manual_seed(3)
    assert torch.equal(ours, torch.nn.functional.dropout(x, 0.3, True))


def test_flatten_gradient_keeps_the_channels_last_layout() -> None:
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weight = torch.randn(4, 75)
    out = GradLayoutFlatten()(ours)
    assert torch.equal(out, torch.nn.Flatten()(theirs))
    (out * weight).sum().backward()
    (torch.nn.Flatten()(theirs) * weight).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)
    assert ours.grad.is_contiguous(memory_format=torch.channels_last) and not ours.grad.is_contiguous()
    # plain NCHW input: nn.Flatten's own (view) path
    plain = torch.randn(2, 3, 4, 4, requires_grad=True)
    GradLayoutFlatten()(plain).sum().backward()
    assert plain.grad.is_contiguous()
