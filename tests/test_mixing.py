"""Mixup/CutMix as a target transform: off by default, timm's mixing of index and dense targets,
one-line errors for batches it cannot pair."""
import pytest
import torch

from timm_multilabel import UserError, create_target_transform


def _mixup(**kw):
    return create_target_transform('mixup', num_classes=4, **kw)


def test_off_when_both_alphas_are_zero():
    assert _mixup() is None
    assert _mixup(mixup_alpha=0.2) is not None
    assert _mixup(cutmix_alpha=1.0) is not None


def test_mixup_of_index_targets_mixes_each_sample_with_its_mirror():
    torch.manual_seed(0)
    mix = _mixup(mixup_alpha=0.4, prob=1.0, switch_prob=0.0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    y = torch.tensor([0, 1, 2, 3])
    mixed_x, target = mix(x, y)
    lam = target[0, 0].item()  # sample 0 (class 0) mixed with sample 3 (class 3)
    assert 0.0 <= lam <= 1.0
    assert target[0, 3].item() == pytest.approx(1 - lam)
    assert mixed_x[0, 0, 0, 0].item() == pytest.approx(lam * 0 + (1 - lam) * 3)
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_dense_targets_are_mixed_as_they_are_without_smoothing():
    torch.manual_seed(0)
    mix = _mixup(mixup_alpha=0.4, prob=1.0, switch_prob=0.0, dense_targets=True, label_smoothing=0.1)
    x = torch.zeros(2, 3, 2, 2)
    y = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
    _, target = mix(x, y)
    lam = (target[0, 0] / 0.5).item()
    assert torch.allclose(target[0], lam * y[0] + (1 - lam) * y[1], atol=1e-6)  # no smoothing added


def test_odd_batch_and_wrong_dense_shape_are_one_line_errors():
    mix = _mixup(mixup_alpha=0.4)
    with pytest.raises(UserError, match='got a batch of 3.*even batch'):
        mix(torch.zeros(3, 3, 2, 2), torch.tensor([0, 1, 2]))
    dense = _mixup(mixup_alpha=0.4, dense_targets=True)
    with pytest.raises(UserError, match=r'expects \[B, C\] targets, got shape \(2,\)'):
        dense(torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]))
