"""Built-in losses, registered under the names train.py's flags resolve to.

They are timm's own losses; this module only names them in our registry so that
``--bce-loss``, ``--smoothing`` and Mixup map onto one factory call.
"""
from __future__ import annotations

from typing import Any, Optional

import torch.nn as nn
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .registry import register_loss


@register_loss('cross_entropy')
def cross_entropy(smoothing: float = 0.0, soft_targets: bool = False, **kwargs) -> nn.Module:
    """Softmax cross-entropy: soft (dense [B, C]) targets, else index targets with smoothing."""
    if soft_targets:
        return SoftTargetCrossEntropy()
    if smoothing:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


@register_loss('bce')
def bce(
        smoothing: float = 0.0,
        soft_targets: bool = False,
        target_threshold: Optional[float] = None,
        sum_classes: bool = False,
        pos_weight: Optional[float] = None,
        **kwargs,
) -> nn.Module:
    """Sigmoid binary cross-entropy (timm's), for index or dense targets.

    ``sum_classes`` sums over classes and averages over samples (timm's ``--bce-sum``; MILe's
    Eq. 1), instead of averaging over both; ``pos_weight`` weighs positive targets.
    """
    return BinaryCrossEntropy(
        smoothing=0.0 if soft_targets else smoothing,
        target_threshold=target_threshold,
        sum_classes=sum_classes,
        pos_weight=pos_weight,
    )


@register_loss('jsd_cross_entropy')
def jsd_cross_entropy(num_splits: int = 3, smoothing: float = 0.1, soft_targets: bool = False, **kwargs) -> nn.Module:
    """timm's ``JsdCrossEntropy`` (``--jsd-loss`` with ``--aug-splits N``): cross-entropy on the clean
    split plus the Jensen-Shannon divergence across the N splits, for logits [N * B, C] and index
    targets [N * B] in timm's split layout (split j is rows j*B .. j*B+B-1)."""
    if soft_targets:
        raise ValueError('jsd_cross_entropy takes class-index targets, not dense [B, C] ones')
    return JsdCrossEntropy(num_splits=num_splits, smoothing=smoothing)


def output_activation(criterion: Any) -> str:
    """``'sigmoid'`` for a binary cross-entropy criterion (torch's, timm's or a subclass), else
    ``'softmax'``: how evaluation turns the model's logits into probabilities."""
    return 'sigmoid' if isinstance(criterion, (nn.BCEWithLogitsLoss, BinaryCrossEntropy)) else 'softmax'
