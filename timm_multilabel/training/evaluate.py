"""Evaluation for train.py: every test sample counted exactly once across processes."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from ..evaluation import IndexedDataset, predict
from ..metrics import compute_multilabel_metrics

__all__ = ['IndexedDataset', 'evaluate', 'evaluation_loss']


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
) -> Dict[str, Any]:
    """Top-1, ReaL metrics and mAP of ``model`` on the eval loader of :class:`IndexedDataset` batches,
    plus ``eval_samples``; every test sample counted exactly once across processes."""
    out = predict(model, loader, accelerator.gather_for_metrics, autocast=autocast, channels_last=channels_last,
                  progress=progress)
    order = torch.argsort(out['indices'])
    logits, labels, indices = out['logits'][order], out['labels'][order], out['indices'][order]
    sample_real = [list(real_labels[i]) for i in indices.tolist()] if real_labels is not None else None
    metrics = compute_multilabel_metrics(logits, labels, sample_real, probs_kind=probs_kind)
    metrics['loss'] = evaluation_loss(logits, labels, probs_kind)
    metrics['eval_samples'] = int(len(indices))
    metrics['eval_unique_samples'] = int(torch.unique(indices).numel())
    return metrics
