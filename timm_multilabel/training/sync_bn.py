"""BatchNorm synchronized over CPU processes (gloo), for ``--sync-bn`` when the processes run on the CPU.

torch's :class:`torch.nn.SyncBatchNorm` refuses CPU input, and DistributedDataParallel refuses any
``SyncBatchNorm`` layer in a CPU module. On GPUs train.py uses timm's ``convert_sync_batchnorm``;
on the CPU, :func:`make_cpu_syncable` turns the model's BatchNorm layers (torch's ``BatchNorm1d/2d/3d``
and timm's ``BatchNormAct2d``) into the subclasses below, which keep every parameter and buffer
and, in training under an initialized process group, normalize with the mean and biased variance
of the whole global batch (two differentiable all-reduces, so each rank's input gradient is that
of the summed losses of all ranks, as torch's SyncBatchNorm gives) and update the running
statistics with the global mean and unbiased variance. Otherwise (eval mode, no process group)
they are the BatchNorm they were.
"""
from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.layers import BatchNormAct2d

__all__ = ['CpuSyncBatchNorm', 'CpuSyncBatchNormAct', 'make_cpu_syncable']


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the gradient is summed over the ranks too (each rank's input feeds every
    rank's loss)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    return _AllReduceSum.apply(tensor, group)


def _cpu_sync_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, *] normalized over the batches of all ranks (see the module docstring)."""
    group = getattr(bn, 'process_group', None) or dist.group.WORLD
    dims: List[int] = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    local_count = x.new_full((1,), x.numel() / max(x.shape[1], 1))
    summed = all_reduce(torch.cat([x.sum(dims), local_count]), group)
    count = summed[-1].detach()
    mean = summed[:-1] / count
    centered = x - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims), group) / count
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.item()
        with torch.no_grad():
            unbiased = var.detach() * (count / (count - 1).clamp(min=1))
            bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    out = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


def _synchronizes(bn: nn.Module, x: torch.Tensor) -> bool:
    return bn.training and x.device.type == 'cpu' and dist.is_available() and dist.is_initialized() \
        and x.dim() >= 2 and x.shape[1] > 0


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all CPU processes (not a torch SyncBatchNorm: DDP refuses
    those on the CPU)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if _synchronizes(self, input):
            return _cpu_sync_batch_norm(self, input)
        return super().forward(input)


class CpuSyncBatchNormAct(BatchNormAct2d):
    """timm's BatchNormAct2d (norm, then drop and act) with :class:`CpuSyncBatchNorm`'s statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _synchronizes(self, x):
            return self.act(self.drop(_cpu_sync_batch_norm(self, x)))
        return super().forward(x)


def make_cpu_syncable(model: nn.Module) -> nn.Module:
    """Turn the BatchNorm layers of ``model`` (torch's ``BatchNorm1d/2d/3d``, timm's ``BatchNormAct2d``)
    into :class:`CpuSyncBatchNorm` / :class:`CpuSyncBatchNormAct`, in place; returns ``model``. The
    subclasses add no state, so each layer keeps its parameters and buffers."""
    for module in model.modules():
        if type(module) is BatchNormAct2d:
            module.__class__ = CpuSyncBatchNormAct
        elif type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            module.__class__ = CpuSyncBatchNorm
    return model
