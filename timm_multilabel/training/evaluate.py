"""Evaluation for train.py: every test sample counted exactly once across processes."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation import IndexedDataset, predict
from ..metrics import compute_multilabel_metrics

__all__ = ['IndexedDataset', 'evaluate', 'evaluation_loss', 'tta_reduce', 'ViewsAveraged']


def tta_reduce(output: torch.Tensor, n: int) -> torch.Tensor:
    """timm's ``--tta`` reduction: the mean of each group of ``n`` consecutive outputs, [B * n, C] -> [B, C]."""
    return output.unfold(0, n, n).mean(dim=2)


class ViewsAveraged(nn.Module):
    """``model`` on batches of N views an image [B, N, C, H, W] (``--tta``, see ``training/loaders.py``):
    the B * N views in one forward pass, then each image's N outputs averaged (:func:`tta_reduce`) -> [B, C]."""

    def __init__(self, model: nn.Module, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[1]
        x = images.flatten(0, 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return tta_reduce(out, n)


def evaluation_loss(logits: torch.Tensor, labels: torch.Tensor, probs_kind: str) -> float:
    """Loss against the single labels (-1 ignored): softmax CE, or BCE on one-hot for sigmoid models."""
    valid = labels >= 0
    if not valid.any():
        return float('nan')
    logits, labels = logits[valid], labels[valid]
    if probs_kind == 'sigmoid':
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, logits.shape[1]).float()).item()
    return F.cross_entropy(logits, labels).item()


def evaluate(
        model: torch.nn.Module,
        loader,
        accelerator,
        real_labels: Optional[Sequence[Sequence[int]]],
        probs_kind: str,
        autocast: Callable[[], Any] = nullcontext,
        channels_last: bool = False,
        progress: Optional[Callable] = None,
        tta: int = 0,
        normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Dict[str, Any]:
    """Top-1, ReaL metrics and mAP of ``model`` on the eval loader of :class:`IndexedDataset` batches,
    plus ``eval_samples``; every test sample counted exactly once across processes. ``tta`` > 1: the
    batches hold ``tta`` views an image [B, tta, C, H, W], whose outputs are averaged before the metrics.
    ``normalize``: applied to each image batch first (uint8 batches, see ``device_batches``)."""
    if tta > 1:
        model, channels_last = ViewsAveraged(model, channels_last), False
    out = predict(model, loader, accelerator.gather_for_metrics, autocast=autocast, channels_last=channels_last,
                  progress=progress, normalize=normalize)
    order = torch.argsort(out['indices'])
    logits, labels, indices = out['logits'][order], out['labels'][order], out['indices'][order]
    sample_real = [list(real_labels[i]) for i in indices.tolist()] if real_labels is not None else None
    metrics = compute_multilabel_metrics(logits, labels, sample_real, probs_kind=probs_kind)
    metrics['loss'] = evaluation_loss(logits, labels, probs_kind)
    metrics['eval_samples'] = int(len(indices))
    metrics['eval_unique_samples'] = int(torch.unique(indices).numel())
    return metrics
