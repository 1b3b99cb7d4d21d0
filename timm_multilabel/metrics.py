"""Multi-label evaluation metrics: ReaL accuracy, ReaL-F1, label coverage, mAP.

Functional and vectorized; every function takes ``Tensor[N, C]`` scores on any device and
returns a Python float. Results are in percent, like timm's ``accuracy``, except
:func:`label_coverage` (labels per image).

ReaL rules (Beyer et al., "Are we done with ImageNet?"; MILe Sec. 4.1):

* ``real_labels`` is a list of ``N`` label lists (the format of timm's bundled
  ``timm/data/_info/imagenet_real_labels.json``) or a ``Tensor[N, C]`` bool mask.
* Images whose label list is empty are skipped.
* An image's predicted set is its argmax plus every class whose probability is strictly
  greater than ``threshold``.
* Per-image F1 is ``2TP / (2TP + FP + FN)``, averaged over the non-skipped images.

A metric over zero non-skipped images is ``nan``.
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .metric_names import METRIC_KEYS, METRIC_NAMES, METRIC_TITLES

__all__ = [
    'RealLabels', 'real_labels_to_mask', 'predicted_label_set',
    'real_accuracy', 'real_f1', 'label_coverage', 'mean_average_precision',
    'compute_multilabel_metrics', 'METRIC_KEYS', 'METRIC_NAMES', 'METRIC_TITLES',
]

RealLabels = Union[Sequence[Sequence[int]], torch.Tensor]

# Elements per chunk in mean_average_precision (bounds its working memory).
_AP_CHUNK_ELEMS = 1 << 24


def _check_scores(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise UserError(f'{name} must be a torch.Tensor [N, C], got {type(x).__name__}')
    if x.ndim != 2:
        raise UserError(f'{name} must be a 2-D tensor [N, C], got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise UserError(f'{name} must be a floating-point tensor, got dtype {x.dtype}')
    if x.shape[1] == 0:
        raise UserError(f'{name} has zero classes (shape {tuple(x.shape)})')
    if bool(torch.isnan(x).any()):
        raise UserError(f'{name} contains NaN')


def _check_probs(probs: torch.Tensor, threshold: float) -> None:
    _check_scores(probs, 'probs')
    if probs.numel() and (bool((probs < 0).any()) or bool((probs > 1).any())):
        raise UserError(
            f'probs must lie in [0, 1] (got min {probs.min().item():.4g}, max {probs.max().item():.4g});'
            ' apply softmax or sigmoid to the logits first')
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f'threshold must be in [0, 1], got {threshold}')


def real_labels_to_mask(
        real_labels: RealLabels,
        num_classes: int,
        device: Optional[Union[torch.device, str]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn ReaL labels into a dense mask.

    Args:
        real_labels: ``N`` label lists (class ids in ``[0, num_classes)``, possibly empty), or a
            bool (or 0/1) ``Tensor[N, num_classes]``.
        num_classes: ``C``.
        device: device of the returned tensors (default: the tensor's own, else CPU).

    Returns:
        ``(mask, valid)``: ``mask`` bool ``Tensor[N, C]`` (``mask[i, c]`` iff ``c`` is a label of
        image ``i``) and ``valid`` bool ``Tensor[N]`` (image ``i`` has at least one label).
    """
    if isinstance(real_labels, torch.Tensor):
        if real_labels.ndim != 2 or real_labels.shape[1] != num_classes:
            raise UserError(
                f'real_labels tensor must have shape [N, {num_classes}], got {tuple(real_labels.shape)}')
        if real_labels.dtype == torch.bool:
            mask = real_labels
        else:
            if real_labels.is_floating_point() and bool(torch.isnan(real_labels).any()):
                raise UserError('real_labels tensor contains NaN')
            if bool(((real_labels != 0) & (real_labels != 1)).any()):
                raise UserError(f'real_labels tensor must be bool or 0/1, got other values (dtype {real_labels.dtype})')
            mask = real_labels != 0
        mask = mask.to(device) if device is not None else mask
        return mask, mask.any(dim=1)

    if isinstance(real_labels, (str, bytes)) or not isinstance(real_labels, Sequence):
        raise UserError(f'real_labels must be a list of label lists or a bool tensor [N, C], '
                        f'got {type(real_labels).__name__}')
    entries = []
    for i, entry in enumerate(real_labels):
        if isinstance(entry, (torch.Tensor, np.ndarray)):
            entry = entry.tolist()
        if isinstance(entry, (str, bytes)) or not isinstance(entry, (list, tuple)):
            raise UserError(f'real_labels[{i}] must be a list of class ids, got {type(entry).__name__}')
        entries.append(entry)
    num = len(entries)
    lengths = torch.tensor([len(e) for e in entries], dtype=torch.long)
    try:
        flat = np.asarray(list(chain.from_iterable(entries)))
    except (TypeError, ValueError) as e:
        raise UserError(f'real_labels must be lists of integer class ids ({e})') from None
    if flat.ndim != 1:
        raise UserError('real_labels must be lists of integer class ids, found nested lists')
    if flat.size:
        if flat.dtype.kind not in 'iu':
            raise UserError(f'real_labels must hold integer class ids, found {flat.dtype} values')
        bad = np.nonzero((flat < 0) | (flat >= num_classes))[0]
        if bad.size:
            row = int(np.searchsorted(np.cumsum(lengths.numpy()), bad[0], side='right'))
            raise UserError(
                f'real_labels[{row}] has class id {int(flat[bad[0]])} outside [0, {num_classes})')
    rows = torch.repeat_interleave(torch.arange(num), lengths)
    cols = torch.from_numpy(flat.astype(np.int64, copy=False)) if flat.size else rows
    mask = torch.zeros(num, num_classes, dtype=torch.bool)
    mask[rows, cols] = True
    mask = mask.to(device) if device is not None else mask
    return mask, lengths.to(mask.device) > 0


def _mask_for(scores: torch.Tensor, real_labels: RealLabels, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    n, c = scores.shape
    if len(real_labels) != n:
        raise UserError(f'real_labels has {len(real_labels)} entries but {name} has {n} rows')
    return real_labels_to_mask(real_labels, c, device=scores.device)


def predicted_label_set(probs: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """ReaL predicted set: argmax plus every class with probability ``> threshold``.

    Args:
        probs: ``Tensor[N, C]`` probabilities.
        threshold: strict lower bound for a non-argmax class to be predicted.

    Returns:
        bool ``Tensor[N, C]``, at least one ``True`` per row.
    """
    pred = probs > threshold
    pred[torch.arange(probs.shape[0], device=probs.device), probs.argmax(dim=1)] = True
    return pred


def _mean_over(values: torch.Tensor, valid: torch.Tensor) -> float:
    count = int(valid.sum())
    if count == 0:
        return math.nan
    return float(values[valid].double().sum()) / count


def real_accuracy(logits: torch.Tensor, real_labels: RealLabels) -> float:
    """ReaL accuracy in percent: top-1 prediction is in the image's ReaL label set.

    Args:
        logits: ``Tensor[N, C]`` logits or probabilities (only the argmax is used).
        real_labels: ``N`` label lists or bool ``Tensor[N, C]``; empty images are skipped.
    """
    _check_scores(logits, 'logits')
    mask, valid = _mask_for(logits, real_labels, 'logits')
    correct = mask.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    return 100.0 * _mean_over(correct, valid)


def real_f1(probs: torch.Tensor, real_labels: RealLabels, threshold: float = 0.25) -> float:
    """ReaL-F1 in percent: mean over images of ``2TP / (2TP + FP + FN)``.

    Args:
        probs: ``Tensor[N, C]`` probabilities (softmax or sigmoid).
        real_labels: ``N`` label lists or bool ``Tensor[N, C]``; empty images are skipped.
        threshold: predicted set is argmax plus classes with ``prob > threshold``.
    """
    _check_probs(probs, threshold)
    mask, valid = _mask_for(probs, real_labels, 'probs')
    pred = predicted_label_set(probs, threshold)
    tp = (pred & mask).sum(dim=1)
    fp = (pred & ~mask).sum(dim=1)
    fn = (~pred & mask).sum(dim=1)
    f1 = (2 * tp).double() / (2 * tp + fp + fn).clamp_min(1)  # denominator >= 1 (argmax always predicted)
    return 100.0 * _mean_over(f1, valid)


def label_coverage(probs: torch.Tensor, real_labels: RealLabels, threshold: float = 0.25) -> float:
    """Mean size of the predicted set (argmax plus ``prob > threshold``), in labels per image.

    Averaged over the same images as :func:`real_f1` (empty ReaL lists skipped).

    Args:
        probs: ``Tensor[N, C]`` probabilities.
        real_labels: ``N`` label lists or bool ``Tensor[N, C]``.
        threshold: as in :func:`real_f1`.
    """
    _check_probs(probs, threshold)
    _, valid = _mask_for(probs, real_labels, 'probs')
    return _mean_over(predicted_label_set(probs, threshold).sum(dim=1), valid)


def _average_precision_columns(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP of each column of ``scores [N, K]`` against bool ``targets [N, K]`` -> ``[K]``.

    Tied scores form one threshold (as scikit-learn's ``average_precision_score``): every
    positive in a tie group is credited with the precision at the end of the group, so the
    result does not depend on the order of tied items.
    """
    n = scores.shape[0]
    dtype = torch.float32 if scores.device.type == 'mps' else torch.float64
    sorted_scores, order = scores.sort(dim=0, descending=True, stable=True)
    hits = targets.gather(0, order)
    tp = hits.cumsum(dim=0)
    # End of each tie group: last row, or the next sorted score differs.
    is_end = torch.ones_like(hits)
    is_end[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    pos = torch.arange(n, device=scores.device).unsqueeze(1).expand_as(tp)
    # For each row, the index of its group's end: reverse cumulative min over end indices.
    end_idx = torch.where(is_end, pos, torch.full_like(pos, n))
    end_idx = end_idx.flip(0).cummin(dim=0).values.flip(0)
    precision_at_end = tp.gather(0, end_idx).to(dtype) / (end_idx + 1).to(dtype)
    num_pos = tp[-1].to(dtype)
    return (precision_at_end * hits).sum(dim=0) / num_pos


def mean_average_precision(scores: torch.Tensor, targets: RealLabels) -> float:
    """Mean over classes of average precision, in percent.

    AP of a class ranks all ``N`` images by that class's score and averages the precision at
    each positive (``sum_n (R_n - R_{n-1}) P_n``, as scikit-learn); tied scores are one
    threshold, so ties are handled deterministically. Classes without a positive are skipped.

    Args:
        scores: ``Tensor[N, C]`` scores (logits or probabilities; only per-class order matters).
        targets: bool (or 0/1) ``Tensor[N, C]`` or ``N`` label lists.
    """
    _check_scores(scores, 'scores')
    mask, _ = _mask_for(scores, targets, 'scores')
    n, c = scores.shape
    has_pos = mask.any(dim=0)
    cols = has_pos.nonzero().squeeze(1)
    if cols.numel() == 0:
        return math.nan
    chunk = max(1, _AP_CHUNK_ELEMS // max(n, 1))
    total = 0.0
    for start in range(0, cols.numel(), chunk):
        idx = cols[start:start + chunk]
        total += float(_average_precision_columns(scores[:, idx], mask[:, idx]).sum())
    return 100.0 * total / cols.numel()


def compute_multilabel_metrics(
        logits: torch.Tensor,
        labels: Optional[torch.Tensor],
        real_labels: Optional[RealLabels] = None,
        probs_kind: str = 'softmax',
) -> Dict[str, Optional[float]]:
    """All evaluation metrics of one (gathered) evaluation set.

    Args:
        logits: ``Tensor[N, C]`` model outputs.
        labels: ``Tensor[N]`` int single labels (``-1`` = no label, ignored), or ``None``.
        real_labels: ``N`` multi-label lists or bool ``Tensor[N, C]`` (ReaL-style ground truth),
            or ``None``.
        probs_kind: ``'softmax'`` for a softmax-trained model, ``'sigmoid'`` for a BCE-trained one.

    Returns:
        dict with exactly the keys :data:`METRIC_KEYS`: ``top1`` (percent vs ``labels``; ``None``
        without labels), ``real_acc``, ``real_f1@0.25``, ``real_f1@0.5`` (percent),
        ``label_coverage@0.25`` (labels per image), ``mAP`` (percent, per-class ranking of the
        probabilities, over images with a non-empty ReaL set); the ReaL ones are ``None`` when
        ``real_labels`` is ``None``.
    """
    _check_scores(logits, 'logits')
    if probs_kind not in ('softmax', 'sigmoid'):
        raise UserError(f"probs_kind must be 'softmax' or 'sigmoid', got {probs_kind!r}")
    n, c = logits.shape
    out: Dict[str, Optional[float]] = dict.fromkeys(METRIC_KEYS)

    if labels is not None:
        labels = torch.as_tensor(labels, device=logits.device)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise UserError(f'labels must have shape [{n}] to match logits, got {tuple(labels.shape)}')
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise UserError(f'labels must be integer class ids, got dtype {labels.dtype}')
        if bool(((labels < -1) | (labels >= c)).any()):
            raise UserError(f'labels must be class ids in [0, {c}) or -1 (ignored)')
        has_label = labels >= 0
        out['top1'] = 100.0 * _mean_over(logits.argmax(dim=1) == labels, has_label)

    if real_labels is not None:
        logits = logits.float()
        mask, valid = _mask_for(logits, real_labels, 'logits')
        if probs_kind == 'softmax':
            probs = logits.softmax(dim=1)
            rank_scores = F.log_softmax(logits, dim=1)  # same order as probs, no underflow ties
        else:
            probs = logits.sigmoid()
            rank_scores = logits  # same order as sigmoid, no saturation ties
        out['real_acc'] = real_accuracy(logits, mask)
        out['real_f1@0.25'] = real_f1(probs, mask, 0.25)
        out['real_f1@0.5'] = real_f1(probs, mask, 0.5)
        out['label_coverage@0.25'] = label_coverage(probs, mask, 0.25)
        out['mAP'] = mean_average_precision(rank_scores[valid], mask[valid])
    return out
