"""train.py takes timm 1.0.31's train.py command line and configs: every flag (the list timm's
parser builds, shipped as tests/data/timm_1_0_31_train_flags.json), timm's args.yaml, recipe files,
and our own args.yaml; meaningless combinations are refused in one line; --help tells both defaults."""
import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from timm_multilabel import UserError
from timm_multilabel.training.args import DATASET_DEFAULTS, build_parser, check_args, parse_args

DATA = Path(__file__).parent / 'data'
TIMM = json.loads((DATA / 'timm_1_0_31_train_flags.json').read_text())
FLAGS = TIMM['flags']
# Where our train.py deliberately differs from timm's parser, and why.
DELIBERATE = {
    # the built-in data is the default only without a data folder; with DIR / --data-dir it is '' as in timm
    'dataset': 'digits-grid',
}
KINDS = {'_StoreAction': 'store', '_StoreTrueAction': 'store_true', '_StoreFalseAction': 'store_false',
         '_StoreConstAction': 'store_const'}


@pytest.fixture(scope='module')
def ours():
    parser = build_parser()
    return {s: a for a in parser._actions for s in (a.option_strings or [a.dest])}


def _ours_for(ours, flag):
    return ours[(flag['option_strings'] or [flag['dest']])[0]]


def test_the_fixture_is_timm_1_0_31s_parser():
    assert TIMM['timm_version'] == '1.0.31' and 'make_timm_fixtures.py' in TIMM['made_by']
    assert len(FLAGS) == 172 and FLAGS[0]['dest'] == 'data' and FLAGS[0]['option_strings'] == []
    assert len({f['dest'] for f in FLAGS}) == 172


def test_every_timm_flag_is_defined_as_timm_defines_it(ours):
    for flag in FLAGS:
        action = _ours_for(ours, flag)
        kind = KINDS.get(type(action).__name__, type(action).__name__)
        got = dict(option_strings=action.option_strings, dest=action.dest, nargs=action.nargs, const=action.const,
                   type=getattr(action.type, '__name__', None), action=kind,
                   choices=list(action.choices) if action.choices is not None else None, default=action.default)
        want = {k: flag[k] for k in got}
        want['default'] = DELIBERATE.get(flag['dest'], flag['default'])
        assert got == want, flag['dest']
        assert action.help, f'{flag["dest"]}: no help'


def _sample(flag):
    """(argv after the option, the value timm's parser would store) for one flag."""
    cast = {'int': int, 'float': float, None: str, 'str': str}[flag['type']]
    raw = {'int': '7', 'float': '0.25'}.get(flag['type'], 'abc')
    if flag['choices']:
        raw = next(str(c) for c in flag['choices'] if c != flag['default'])
    if flag['action'] == 'store_true':
        return [], True
    if flag['action'] == 'ParseKwargs':
        return ['a=1', 'b=x'], {'a': 1, 'b': 'x'}
    if flag['nargs'] in ('+', '*'):
        return [raw, raw], [cast(raw)] * 2
    if isinstance(flag['nargs'], int):
        return [raw] * flag['nargs'], [cast(raw)] * flag['nargs']
    return [raw], cast(raw)


def test_every_timm_flag_parses_into_timms_dest():
    # all 172 arguments on one command line (then the second option strings), each with a sample value
    # unlike its default, so a flag stored under another dest would leave its own at the default
    samples = {f['dest']: _sample(f) for f in FLAGS}
    assert all(expected != f['default'] for f, (_, expected) in zip(FLAGS, samples.values()))
    for pick in (0, -1):  # -b / --batch-size, --dr / --decay-rate, ...
        argv = samples['data'][0] + [a for f in FLAGS[1:] for a in (f['option_strings'][pick], *samples[f['dest']][0])]
        args, _ = parse_args(argv)
        assert {f['dest']: getattr(args, f['dest']) for f in FLAGS} == {d: v for d, (_, v) in samples.items()}
    assert sum(len(f['option_strings']) == 2 for f in FLAGS) == 5
    args, _ = parse_args(['--torchcompile', '--seed', '1'])  # alone: timm's const
    assert args.torchcompile == 'inductor'


def test_with_a_data_folder_every_default_is_timms(tmp_path):
    args, _ = parse_args([str(tmp_path)])
    for flag in FLAGS:
        want = {'data': str(tmp_path), 'data_dir': str(tmp_path)}.get(flag['dest'], flag['default'])
        assert getattr(args, flag['dest']) == want, flag['dest']  # timm copies data into data_dir too


def _timm_yaml(name):
    return yaml.safe_load((DATA / name).read_text())


def test_timms_own_args_yaml_is_accepted_as_written(tmp_path):
    recipe = _timm_yaml('timm_1_0_31_args_recipe.yaml')
    assert len(recipe) == 172 and recipe['bce_loss'] is True and recipe['wandb_tags'] == ['rsb', 'a2']
    args, _ = parse_args(['-c', str(DATA / 'timm_1_0_31_args_recipe.yaml')])
    assert args.dataset == '' and args.data_dir == '/data/imagenet'  # timm's data key selects the image folder
    assert {k: getattr(args, k) for k in recipe} == {**recipe, 'data_dir': '/data/imagenet'}
    defaults = _timm_yaml('timm_1_0_31_args_defaults.yaml')
    args, _ = parse_args(['-c', str(DATA / 'timm_1_0_31_args_defaults.yaml'), '--data-dir', str(tmp_path)])
    plain, _ = parse_args(['--data-dir', str(tmp_path)])
    assert {k: getattr(args, k) for k in defaults} == {**defaults, 'data_dir': str(tmp_path)}
    assert {**vars(args), 'config': ''} == vars(plain)


def test_recipe_files_are_accepted():
    args, _ = parse_args(['-c', str(DATA / 'timm_recipe_rsb_a2_style.yaml')])
    assert (args.opt, args.lr, args.min_lr, args.bce_target_thresh, args.pin_mem) == ('lamb', 5e-3, 1e-6, 0.2, True)
    args, _ = parse_args(['-c', str(DATA / 'timm_recipe_legacy_keys.yaml')])
    assert args.amp is True  # native_amp: true (older timm) is mixed precision
    assert (args.opt, args.decay_epochs, args.drop_connect, args.validation_batch_size) == ('rmsproptf', 2.4, 0.2, None)


@pytest.mark.parametrize('text, expected', [
    ('dynamo: true\ndynamo_backend: aot_eager\n', dict(torchcompile='aot_eager')),
    ('dynamo: false\ndynamo_backend: inductor\n', dict(torchcompile=None)),
    ('iters_to_accum: 4\n', dict(grad_accum_steps=4)),
    ('jsd: false\n', dict(jsd_loss=False)),
    ('apex_amp: true\namp_impl: apex\n', dict(amp=True)),
    ('validation_batch_size_multiplier: 2\nbatch_size: 64\n', dict(validation_batch_size=128)),
    ('config: other.yaml\nepochs: 2\n', dict(config=None, epochs=2)),  # our args.yaml names its -c file
])
def test_older_timm_keys_are_translated(tmp_path, text, expected):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    args, _ = parse_args(['-c', str(path)])
    assert {k: getattr(args, k) for k in expected} == {**expected, **({'config': str(path)} if 'config' in expected
                                                                     else {})}


@pytest.mark.parametrize('text, message', [
    ('dist_bn: reduce\npin_mem: true\nnot_a_flag: 1\n', 'unknown key(s) not_a_flag$'),
    ('bn_tf: true\n', 'bn_tf was removed from timm; use bn_eps and bn_momentum'),
    ('aot_autograd: true\n', 'aot_autograd was removed from timm; use torchcompile'),
    ('native_amp: "yes"\n', "native_amp: expected true or false, got 'yes'"),
    ('amp_impl: cuda\n', "amp_impl: expected native or apex, got 'cuda'"),
    ('wandb_tags: 3\n', 'wandb_tags: expected a list, got 3'),
    ('naflex_train_seq_lens: []\n', 'naflex_train_seq_lens: expected at least one value'),
])
def test_config_keys_neither_timms_nor_ours_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message.rstrip('$')) + ('$' if message.endswith('$') else '')) as e:
        parse_args(['-c', str(path)])
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('argv', [
    [],  # digits-grid, its defaults
    ['{tmp}', '--mile', '--model', 'test_resnet', '--wandb-tags', 'a', 'b', '--opt-kwargs', 'x=1', 'y=z',
     '--torchcompile', '--input-size', '3', '32', '32', '--lr-noise', '0.4', '0.9', '--scale', '0.3', '1'],
])
def test_our_args_yaml_round_trips_through_config(tmp_path, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    args, text = parse_args(argv)
    path = tmp_path / 'args.yaml'
    path.write_text(text)
    again, text_again = parse_args(['-c', str(path)])
    assert {**vars(again), 'config': ''} == vars(args)
    assert yaml.safe_load(text_again) == {**yaml.safe_load(text), 'config': str(path)}


def _check(*argv):
    args, _ = parse_args(list(argv))
    check_args(args)
    return args


@pytest.mark.parametrize('argv, message', [
    (['--torchscript', '--torchcompile'], '--torchscript and --torchcompile both compile the model; choose one'),
    (['--torchcompile-mode', 'max-autotune'], '--torchcompile-mode max-autotune applies to --torchcompile'),
    (['--torchscript', '--sync-bn'], '--sync-bn cannot be used with --torchscript'),
    (['--model-dtype', 'float64'], '--model-dtype float64: expected float32, float16 or bfloat16'),
    (['--amp', '--model-dtype', 'bfloat16'], '--amp needs a float32 model'),
    (['--aug-splits', '1'], '--aug-splits 1: must be 0 (off) or >= 2'),
    (['--split-bn'], '--split-bn keeps BatchNorm layers per augmentation split; add --aug-splits >= 2'),
    (['--dist-bn', 'mean'], '--dist-bn mean: expected broadcast, reduce or ""'),
    (['--wandb-resume-id', 'r1'], '--wandb-resume-id r1 continues a resumed run; add --resume'),
    (['--naflex-loader', '--relabel-maps', 'maps'], '--naflex-loader cannot be combined with --relabel-maps'),
    (['--naflex-patch-sizes', '8', '16', '--naflex-patch-size-probs', '1'],
     '--naflex-patch-size-probs needs one probability per --naflex-patch-sizes value'),
    (['--kd-model-name', 'resnet18', '--mile'], 'cannot be combined with knowledge distillation'),
    (['--val-interval', '0'], '--val-interval 0: must be >= 1'),
    (['--grayscale-prob', '1.5'], r'--grayscale-prob 1.5: must be in [0, 1]'),
    (['--kd-temperature', '0'], '--kd-temperature 0.0: must be > 0'),
])
def test_meaningless_timm_combinations_are_refused_in_one_line(argv, message):
    with pytest.raises(UserError, match=re.escape(message)) as e:
        _check(*argv)
    assert '\n' not in str(e.value)


def test_the_refused_flags_alone_or_completed_are_accepted():
    assert _check('--torchcompile', '--torchcompile-mode', 'max-autotune').torchcompile == 'inductor'
    assert _check('--torchscript').torchscript is True
    assert _check('--model-dtype', 'bfloat16').model_dtype == 'bfloat16'
    assert _check('--dist-bn', '').dist_bn == ''


def _help_of(parser: argparse.ArgumentParser, dest: str) -> str:
    formatter = parser._get_formatter()
    formatter.add_argument(next(a for a in parser._actions if a.dest == dest))
    return ' '.join(formatter.format_help().split())


def test_help_prints_each_default_once_and_the_digits_grid_ones_truthfully(tmp_path):
    parser = build_parser()
    bare, _ = parse_args([])
    folder, _ = parse_args([str(tmp_path)])
    for action in parser._actions:
        assert _help_of(parser, action.dest).count('(default') <= 1, action.dest
    grid = DATASET_DEFAULTS['digits-grid']
    for dest, value in grid.items():
        text = _help_of(parser, dest)
        shown = ' '.join(map(str, value)) if isinstance(value, list) else str(value)
        assert f'(default: {getattr(folder, dest)}; digits-grid: {shown})' in text, text
        assert getattr(bare, dest) == value  # what the help says is what a bare run uses
    assert '(default: resnet50; digits-grid: resnet10t)' in _help_of(parser, 'model')
    assert '(default: 300; digits-grid: 6)' in _help_of(parser, 'epochs')
    assert _help_of(parser, 'mile_kt').endswith('(default: 300)')
    assert _help_of(parser, 'mile_rho').endswith('(default: 0.25)')
    assert _help_of(parser, 'mile_student').endswith('(default: continue)')
    assert '(default: sgd; digits-grid: adamw)' in _help_of(parser, 'opt')
    epilog = ' '.join(parser.format_help().split())
    assert 'built-in digits-grid data with its own defaults' in epilog and '--model resnet10t, ' in epilog
    assert 'None' not in _help_of(parser, 'mile_ks')
