"""medcls's BatchNorm2d: nn.BatchNorm2d's results, with its own backward on channels-last maps with few channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcls.models.batchnorm import BatchNorm2d, uses_wide_backward


def _pair(channels: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    torch.manual_seed(0)
    native = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        native.weight.uniform_(0.5, 1.5)
        native.bias.uniform_(-0.5, 0.5)
    ours = BatchNorm2d(channels, momentum=momentum)
    ours.load_state_dict(native.state_dict())
    return native, ours


def _maps(channels: int, dtype: torch.dtype = torch.float32, size: int = 8, batch: int = 4) -> torch.Tensor:
    x = torch.randn(batch, channels, size, size, dtype=dtype) * 2 + 1  # off-centre, not unit spread
    return x.contiguous(memory_format=torch.channels_last)


def _ours_ran(y: torch.Tensor) -> bool:
    """Whether ``y`` came out of medcls's backward path (not the native kernel's)."""
    return type(y.grad_fn).__name__.startswith("_WideBackwardBatchNorm")


def _grads(layer: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(grad_y)
    return y, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("momentum", [0.1, None])
def test_outputs_gradients_and_running_statistics_match_nn_batchnorm(momentum):
    native, ours = _pair(12, momentum)
    x = _maps(12)
    grad_y = torch.randn_like(x)
    for _ in range(2):  # twice: the running statistics and the batch count move on alike
        expected = _grads(native, x, grad_y)
        got = _grads(ours, x, grad_y)
    assert _ours_ran(got[0])
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(native, name))
    assert got[1].is_contiguous(memory_format=torch.channels_last)  # the gradient keeps the maps' layout


def test_bf16_maps_get_gradients_as_close_as_bf16_allows():
    native, ours = _pair(12)
    x = _maps(12, torch.bfloat16, size=16)
    grad_y = torch.randn_like(x)
    expected, got = _grads(native, x, grad_y), _grads(ours, x, grad_y)
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.float32
    torch.testing.assert_close(got[0], expected[0])  # the same native forward
    torch.testing.assert_close(got[1].float(), expected[1].float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got[2], expected[2], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(got[3], expected[3], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("batch, size", [(4, 3), (3, 5)])  # 36 rows fold by 4; 75 rows (odd) are not folded
def test_the_gradient_is_exact_in_double_precision(batch, size):
    layer = BatchNorm2d(6).double()
    x = _maps(6, torch.float64, size=size, batch=batch).requires_grad_()
    assert uses_wide_backward(x, True, 6)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_the_native_kernel_runs_where_it_is_fast_or_nothing_trains():
    x12, x16 = _maps(12), _maps(16)
    assert uses_wide_backward(x12, True, 12)
    assert not uses_wide_backward(x16, True, 16)  # a multiple of 16 channels: the native backward is fast
    assert not uses_wide_backward(x12, False, 12)  # evaluation: no backward
    assert not uses_wide_backward(x12.contiguous(), True, 12)  # ordinary (channels-first) maps
    layer = BatchNorm2d(12).eval()
    assert not _ours_ran(layer(x12.clone().requires_grad_()))


def test_state_dicts_are_interchangeable_with_nn_batchnorm():
    native, ours = _pair(12)
    assert list(ours.state_dict()) == list(native.state_dict())
    again = nn.BatchNorm2d(12)
    again.load_state_dict(ours.state_dict())
    torch.testing.assert_close(again.weight, native.weight)
