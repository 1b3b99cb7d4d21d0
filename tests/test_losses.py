"""The built-in losses: which timm loss each flag combination creates, and its values."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from timm_multilabel import create_loss
from timm_multilabel.losses import output_activation


def test_cross_entropy_variants():
    assert type(create_loss('cross_entropy')) is nn.CrossEntropyLoss
    assert isinstance(create_loss('cross_entropy', smoothing=0.1), LabelSmoothingCrossEntropy)
    # soft (Mixup / pooled ReLabel) targets: smoothing is already in the targets
    assert isinstance(create_loss('cross_entropy', smoothing=0.1, soft_targets=True), SoftTargetCrossEntropy)


def test_label_smoothing_value_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    loss = create_loss('cross_entropy', smoothing=0.3)(logits, torch.tensor([0])).item()
    logp = F.log_softmax(logits, dim=1)[0]
    expected = -(0.7 * logp[0] + 0.3 * logp.mean())
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_bce_on_index_targets_is_one_hot_bce_averaged_over_classes():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    target = torch.tensor([2, 1])
    loss = create_loss('bce')(logits, target).item()
    by_hand = 0.0
    for row, t in zip(logits.tolist(), target.tolist()):
        for c, x in enumerate(row):
            y = 1.0 if c == t else 0.0
            by_hand -= y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x)))
    assert loss == pytest.approx(by_hand / 6, rel=1e-6)


def test_bce_smoothing_applies_to_index_targets_only_and_threshold_is_passed():
    assert create_loss('bce', smoothing=0.1).smoothing == 0.1
    assert create_loss('bce', smoothing=0.1, soft_targets=True).smoothing == 0.0
    assert create_loss('bce', target_threshold=0.2).target_threshold == 0.2


def test_output_activation_follows_the_criterion():
    assert output_activation(create_loss('bce')) == 'sigmoid'
    assert output_activation(nn.BCEWithLogitsLoss()) == 'sigmoid'

    class MyBCE(BinaryCrossEntropy):
        pass

    assert output_activation(MyBCE()) == 'sigmoid'
    assert output_activation(create_loss('cross_entropy')) == 'softmax'
    assert output_activation(create_loss('cross_entropy', soft_targets=True)) == 'softmax'
