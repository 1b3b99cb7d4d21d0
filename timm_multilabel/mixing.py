"""Mixup/CutMix as a registered target transform.

timm's ``Mixup`` already mixes dense targets when ``multi_label=True`` (targets [B, C] used as
they are), which is what pooled ReLabel targets and MILe's teacher phase need: CutMix's
area-corrected lambda then weights the two pooled targets by pasted area.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from timm.data import Mixup

from .errors import UserError
from .registry import register_target_transform


class BatchMixup(Mixup):
    """timm's Mixup with a one-line error for odd batches instead of an assert.

    Args:
        dense_targets: targets are already [B, C] distributions (pooled maps), not class indices.
        **kwargs: timm ``Mixup`` arguments.
    """

    def __init__(self, dense_targets: bool = False, **kwargs):
        if dense_targets:
            kwargs['label_smoothing'] = 0.0
        super().__init__(multi_label=dense_targets, **kwargs)
        self.dense_targets = dense_targets

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        if len(x) % 2:
            raise UserError(f'Mixup/CutMix got a batch of {len(x)}: it pairs each sample with its mirror and needs '
                            f'an even batch (use an even --batch-size and drop_last)')
        if self.dense_targets and target.ndim != 2:
            raise UserError(f'Mixup with dense targets expects [B, C] targets, got shape {tuple(target.shape)}')
        return super().__call__(x, target)


@register_target_transform('mixup')
def create_mixup(
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Optional[Sequence[float]] = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = 'batch',
        label_smoothing: float = 0.0,
        dense_targets: bool = False,
) -> Optional[BatchMixup]:
    """Mixup/CutMix for a batch ``(images [B,3,H,W], targets [B] or [B,C])``; None when both alphas are 0."""
    if not (mixup_alpha > 0 or cutmix_alpha > 0 or cutmix_minmax is not None):
        return None
    return BatchMixup(
        dense_targets=dense_targets, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
        cutmix_minmax=cutmix_minmax, prob=prob, switch_prob=switch_prob, mode=mode,
        label_smoothing=label_smoothing, num_classes=num_classes)
