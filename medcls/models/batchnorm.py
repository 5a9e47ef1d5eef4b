"""Batch norm whose training backward stays fast on channels-last maps with few channels.

PyTorch's CPU kernel for the backward pass of batch norm on channels-last maps is several times slower when
the channel count is not a multiple of 16: for the default small_cnn's first block (12 channels at 64 x 64 px,
batch 32), forward and backward took 15-19 ms against 2.3-2.8 ms for 16 channels, a quarter of a whole
training step (docs/ablation.md, "Batch norm's backward with 12 channels (2026-12-05)"). That held with both
the AVX-512 and the AVX2 kernels, in bf16 and in fp32.

:class:`BatchNorm2d` keeps ``nn.BatchNorm2d``'s parameters, buffers, state-dict names and forward pass (the
native kernel, running statistics included) and replaces only that backward: the gradients are computed with
a few element-wise passes and column sums over the maps viewed as a (rows, channels) matrix, made wide so
that they vectorise. Elsewhere (evaluation, contiguous maps, channel counts that are a multiple of 16) it is
``nn.BatchNorm2d`` itself.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BatchNorm2d", "uses_wide_backward"]

# The native channels-last backward is fast when the channel count is a multiple of this.
FAST_NATIVE_CHANNELS = 16
# Rows folded into one row of the wide view (a power of two dividing the row count): a row of 12 channels
# becomes one of 768 values, which the element-wise kernels vectorise.
WIDE_ROWS = 64


def uses_wide_backward(x: torch.Tensor, training: bool, channels: int) -> bool:
    """Whether :class:`BatchNorm2d` computes this input's gradients itself instead of the native kernel."""
    return (training and x.dim() == 4 and channels % FAST_NATIVE_CHANNELS != 0 and x.shape[1] == channels
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and x.numel() // channels > 1)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with a faster training backward on channels-last maps (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not uses_wide_backward(x, self.training, self.num_features) or not self.track_running_stats:
            return super().forward(x)
        # nn.BatchNorm2d's bookkeeping of the running statistics, unchanged.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return _WideBackwardBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                            momentum, self.eps)


class _WideBackwardBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float,
                eps: float) -> torch.Tensor:
        # The native forward: the same output and running statistics as nn.BatchNorm2d.
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        n, channels, height, width = x.shape
        rows = n * height * width
        fold = WIDE_ROWS
        while rows % fold:
            fold //= 2
        compute = torch.promote_types(x.dtype, torch.float32)

        def wide(t: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) channels-last -> (rows / fold, fold * C)
            return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(
                rows // fold, fold * channels).to(compute)

        def column_sum(t: torch.Tensor) -> torch.Tensor:  # (rows / fold, fold * C) -> (C,)
            return t.sum(0).view(fold, channels).sum(0)

        grad, centred = wide(grad_y), wide(x) - mean.to(compute).repeat(fold)
        grad_sum, grad_dot_centred = column_sum(grad), column_sum(grad * centred)
        invstd = invstd.to(compute)
        scale = invstd if weight is None else invstd * weight.to(compute)
        # dL/dx = scale * (g - mean(g) - x_hat * mean(g * x_hat)), with x_hat = centred * invstd, per channel.
        grad_x = torch.addcmul((-scale * grad_sum / rows).repeat(fold), grad, scale.repeat(fold))
        grad_x = torch.addcmul(grad_x, centred, (-scale * invstd * invstd * grad_dot_centred / rows).repeat(fold))
        grad_x = grad_x.to(x.dtype).view(n, height, width, channels).permute(0, 3, 1, 2)
        grad_weight = (grad_dot_centred * invstd).to(weight.dtype) if weight is not None else None
        grad_bias = grad_sum.to(weight.dtype) if weight is not None else None
        return grad_x, grad_weight, grad_bias, None, None, None, None
