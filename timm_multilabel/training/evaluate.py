"""Evaluation for train.py: every test sample counted exactly once across processes."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Wraps a dataset so each sample also carries its index: ``(image, label, index)``.

    The index lets the main process look up per-sample facts (ReaL label sets) after
    ``gather_for_metrics`` has reassembled the predictions of all ranks.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, torch.as_tensor(label if label is not None else -1), index


@torch.no_grad()
def predict(
        model: torch.nn.Module,
        loader,
        accelerator,
        autocast: Callable[[], Any] = nullcontext,
        channels_last: bool = False,
        progress: Optional[Callable] = None,
) -> Dict[str, torch.Tensor]:
    """Run ``model`` over ``loader`` of (image, label, index) batches on every rank and gather.

    Returns ``logits`` [N, C] float32, ``labels`` [N] and ``indices`` [N] on every process, each
    test sample exactly once (Accelerate drops the duplicates it padded the last batch with).
    """
    model.eval()
    logits, labels, indices = [], [], []
    iterator = progress(loader) if progress is not None else loader
    for images, target, index in iterator:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(images)
        out, target, index = accelerator.gather_for_metrics((out.float(), target, index))
        logits.append(out.cpu())
        labels.append(target.cpu())
        indices.append(index.cpu())
    return {
        'logits': torch.cat(logits) if logits else torch.empty(0),
        'labels': torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        'indices': torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
    }


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
    """Top-1, ReaL metrics and mAP of ``model`` on the eval loader, plus ``eval_samples``."""
    from ..metrics import compute_multilabel_metrics

    out = predict(model, loader, accelerator, autocast, channels_last, progress)
    order = torch.argsort(out['indices'])
    logits, labels, indices = out['logits'][order], out['labels'][order], out['indices'][order]
    sample_real = [list(real_labels[i]) for i in indices.tolist()] if real_labels is not None else None
    metrics = compute_multilabel_metrics(logits, labels, sample_real, probs_kind=probs_kind)
    metrics['loss'] = evaluation_loss(logits, labels, probs_kind)
    metrics['eval_samples'] = int(len(indices))
    metrics['eval_unique_samples'] = int(torch.unique(indices).numel())
    return metrics
