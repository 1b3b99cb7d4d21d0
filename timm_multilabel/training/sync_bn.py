"""SyncBatchNorm that also synchronizes CPU tensors, for ``--sync-bn`` under CPU processes (gloo).

torch's :class:`torch.nn.SyncBatchNorm` refuses CPU input. timm's ``convert_sync_batchnorm`` makes
torch's ``SyncBatchNorm`` (and timm's ``SyncBatchNormAct``) layers; when the processes run on the
CPU, :func:`make_cpu_syncable` turns those into the subclasses below, which keep every parameter
and buffer and, for CPU input in training under an initialized process group, normalize with the
mean and biased variance of the whole global batch (two differentiable all-reduces, so each rank's
input gradient is that of the summed losses of all ranks, as torch's SyncBatchNorm gives) and
update the running statistics with the global mean and unbiased variance. Any other input (GPU,
eval mode, no process group) takes torch's own path.
"""
from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.layers.norm_act import SyncBatchNormAct
from torch.distributed.nn.functional import all_reduce

__all__ = ['CpuSyncBatchNorm', 'CpuSyncBatchNormAct', 'make_cpu_syncable']


def _cpu_sync_batch_norm(bn: nn.SyncBatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, *] normalized over the batches of all ranks (see the module docstring)."""
    group = bn.process_group or dist.group.WORLD
    dims: List[int] = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    local_count = x.new_full((1,), x.numel() / max(x.shape[1], 1))
    summed = all_reduce(torch.cat([x.sum(dims), local_count]), group=group)
    count = summed[-1].detach()
    mean = summed[:-1] / count
    centered = x - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims), group=group) / count
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


class CpuSyncBatchNorm(nn.SyncBatchNorm):
    """torch's SyncBatchNorm, also synchronized for CPU input (gloo)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (input.device.type == 'cpu' and self.training and dist.is_available() and dist.is_initialized()
                and input.shape[1] > 0):
            self._check_input_dim(input)
            return _cpu_sync_batch_norm(self, input)
        return super().forward(input)


class CpuSyncBatchNormAct(SyncBatchNormAct, CpuSyncBatchNorm):
    """timm's SyncBatchNormAct (norm, then drop and act) on :class:`CpuSyncBatchNorm`'s forward."""


def make_cpu_syncable(model: nn.Module) -> nn.Module:
    """Turn the ``SyncBatchNorm`` / ``SyncBatchNormAct`` layers of ``model`` (as timm's
    ``convert_sync_batchnorm`` made them) into the CPU-capable subclasses, in place; returns ``model``.
    The subclasses add no state, so each layer keeps its parameters and buffers."""
    for module in model.modules():
        if type(module) is nn.SyncBatchNorm:
            module.__class__ = CpuSyncBatchNorm
        elif type(module) is SyncBatchNormAct:
            module.__class__ = CpuSyncBatchNormAct
    return model
