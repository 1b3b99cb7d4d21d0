"""train.py's flags without training: parsing, refusals, and what they select."""
import math

import pytest
import torch

from timm_multilabel import UserError, create_loss
from timm_multilabel.training.args import check_args, loss_kwargs, loss_name, parse_args, task_kwargs, task_name


def _args(*argv):
    args, _ = parse_args(list(argv))
    check_args(args)
    return args


def test_mile_trains_with_eq1_and_plain_bce_averages_unless_bce_sum():
    mile = _args('--mile')
    assert loss_name(mile) == 'bce' and loss_kwargs(mile, soft_targets=False)['sum_classes'] is True
    assert create_loss('bce', **loss_kwargs(mile, soft_targets=False)).sum_classes
    assert loss_kwargs(_args('--bce-loss'), soft_targets=False)['sum_classes'] is False
    summed = _args('--bce-loss', '--bce-sum', '--bce-pos-weight', '2')
    crit = create_loss(loss_name(summed), **loss_kwargs(summed, soft_targets=True))
    assert crit.sum_classes and float(crit.pos_weight) == 2.0 and crit.smoothing == 0.0
    assert 'sum_classes' not in loss_kwargs(_args(), soft_targets=False)  # cross-entropy


@pytest.mark.parametrize('flag', [['--bce-sum'], ['--bce-pos-weight', '2'], ['--bce-target-thresh', '0.2']])
def test_bce_flags_without_a_bce_loss_are_refused(flag):
    with pytest.raises(UserError, match=f'{flag[0]} applies to the BCE loss; add --bce-loss'):
        _args(*flag)


def test_task_selection():
    assert task_name(_args()) == 'classification' and task_kwargs(_args()) == {}
    mile = _args('--mile', '--mile-kt', '7', '--task-kwargs', 'extra=1')
    assert task_name(mile) == 'mile'
    assert task_kwargs(mile)['kt'] == 7 and task_kwargs(mile)['extra'] == 1
    with pytest.raises(UserError, match='--mile selects the mile task'):
        _args('--mile', '--task', 'classification')
    with pytest.raises(UserError, match='--mile-kt needs --mile'):
        _args('--mile-kt', '5')


def test_unknown_registry_names_are_refused_in_one_line():
    for flag in ('--loss', '--task', '--target-transform'):
        with pytest.raises(UserError, match=f'{flag} nope: unknown; available: ') as e:
            _args(flag, 'nope')
        assert '\n' not in str(e.value)


def test_head_init_scale_then_bias_like_timm():
    import train
    from timm import create_model
    model = create_model('test_resnet', num_classes=10)
    weight = model.get_classifier().weight.detach().clone()
    train.init_head(model, scale=0.5, bias=-math.log(10))
    assert torch.allclose(model.get_classifier().weight, 0.5 * weight)
    assert torch.allclose(model.get_classifier().bias, torch.full((10,), -math.log(10)))
    # with a zero head weight every class starts at sigmoid(-log C) = 1 / (C + 1), near the prior 1/C
    train.init_head(model, scale=0.0, bias=-math.log(10))
    assert torch.allclose(model.eval()(torch.randn(2, 3, 32, 32)).sigmoid(), torch.full((2, 10), 1 / 11))
