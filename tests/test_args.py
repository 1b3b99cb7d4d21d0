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


@pytest.mark.parametrize('argv,message', [
    (['--lr', 'nan'], '--lr nan: must be a finite number'),
    (['--lr', 'inf'], '--lr inf: must be a finite number'),
    (['--lr', '-0.1'], '--lr -0.1: must be > 0'),
    (['--epochs', '0'], '--epochs 0: must be >= 1'),
    (['--workers', '-1'], '--workers -1: must be >= 0'),
    (['--hflip', '1.5'], r'--hflip 1.5: must be in \[0, 1\]'),
    (['--smoothing', '1.0'], r'--smoothing 1.0: must be in \[0, 1\)'),
    (['--scale', '0.5', 'inf'], r'--scale \[0.5, inf\]: must be a finite number'),
    (['--model', 'resnet-50'], '--model resnet-50: not a timm model; did you mean resnet50'),
    (['--initial-checkpoint', '/no/such.pth'], '--initial-checkpoint /no/such.pth: no such file'),
])
def test_values_out_of_range_are_refused_in_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        _args(*argv)
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('yaml_text,message', [
    ('epochs: 1.5', "epochs: expected an integer, got 1.5"),
    ('lr: [0.1]', r"lr: expected one value, got \[0.1\]"),
    ('lr: .nan', '--lr nan: must be a finite number'),
    ('bce_loss: "false"', "bce_loss: expected true or false, got 'false'"),
    ('scale: 0.5', 'scale: expected a list, got 0.5'),
    ('input_size: [3, 32]', 'input_size: expected 3 values, got 2'),
    ('batch_size: true', 'batch_size: expected a number, got True'),
    ('relabel_mode: sideways', 'relabel_mode: expected one of local, global, local-hard, global-hard'),
    ('model_kwargs: 3', 'model_kwargs: expected a mapping'),
    ('scale: null', r"scale: expected a value \(its default is \[0.08, 1.0\]\), got null"),
    ('model: null', "model: expected a value"),
])
def test_config_values_go_through_the_flags_parsing(tmp_path, yaml_text, message):
    config = tmp_path / 'c.yaml'
    config.write_text(yaml_text + '\n')
    with pytest.raises(UserError, match=message) as e:
        _args('-c', str(config))
    assert '\n' not in str(e.value)


def test_well_typed_config_values_are_taken(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('epochs: 3\nlr: 1e-3\nbce_loss: true\nscale: [0.5, 1]\nmodel_kwargs: {drop_rate: 0.1}\n')
    args = _args('-c', str(config))
    assert args.epochs == 3 and args.lr == 0.001 and args.bce_loss is True
    assert args.scale == [0.5, 1.0] and args.model_kwargs == {'drop_rate': 0.1}


def test_skip_bad_images_needs_batches_that_survive_a_drop():
    with pytest.raises(UserError, match='--skip-bad-images drops undecodable images .* use --batch-size >= 4'):
        _args('--skip-bad-images', '-b', '2')
    assert _args('--skip-bad-images', '-b', '4').skip_bad_images


def test_a_data_folder_selects_the_image_folder_dataset_like_timm(tmp_path):
    for argv in ([str(tmp_path)], ['--data-dir', str(tmp_path)]):
        args = _args(*argv)
        assert args.dataset == '' and args.data_dir == str(tmp_path)
        assert args.model == 'resnet50' and args.epochs == 300  # timm's defaults, not the digits-grid ones
    assert _args('--data-dir', str(tmp_path), '--dataset', 'digits-grid').dataset == 'digits-grid'
    config = tmp_path / 'c.yaml'
    config.write_text(f'data_dir: {tmp_path}\n')
    assert _args('-c', str(config)).dataset == ''
    bare = _args()
    assert bare.dataset == 'digits-grid' and bare.model == 'resnet10t'  # README's first command
