"""configs/: the papers' recipes parse through train.py's own parser and say what they claim.

Each ``configs/*.yaml`` must: parse with ``parse_args(['-c', path, ...])`` and pass ``check_args``
(nothing trains); carry, in its top comment block, the ``accelerate launch`` command that runs it,
which parses too; and name the paper's number in a ``# paper: ...%`` comment. The recipes' settings
are pinned against the papers (global batch = per-process batch x the command's process count).
"""
import importlib.util
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from timm_multilabel.mile import MILeTask
from timm_multilabel.training.args import check_args, loss_kwargs, loss_name, parse_args, task_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / 'configs').glob('*.yaml'))
MILE = ROOT / 'configs' / 'mile_resnet50_imagenet.yaml'
RELABEL = ROOT / 'configs' / 'relabel_resnet50_imagenet.yaml'
RELABEL_CUTMIX = ROOT / 'configs' / 'relabel_cutmix_resnet50_imagenet.yaml'

# What the papers (and official configs) say, in train.py's units; lr is the learning rate train.py
# uses under the config's own command (global batch from --num_processes).
EXPECTED = {
    MILE.name: dict(global_batch=256, lr=0.1, epochs=100, opt='sgd', weight_decay=1e-4, smoothing=0.0,
                    mile=True, mile_rho=0.25, real_labels='timm'),
    RELABEL.name: dict(global_batch=1024, lr=0.1, epochs=300, opt='sgd', weight_decay=1e-4, sched='cosine',
                       smoothing=0.0, cutmix=0.0, mixup=0.0, mile=False),
    RELABEL_CUTMIX.name: dict(global_batch=1024, lr=0.002, epochs=300, opt='adamp', weight_decay=0.01,
                              sched='cosine', smoothing=0.0, cutmix=1.0, mixup=0.0, mixup_off_epoch=295,
                              mile=False),
}


def _train_script():
    spec = importlib.util.spec_from_file_location('train_script_for_configs', ROOT / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _top_comments(path: Path):
    """Comment lines before the first YAML key."""
    lines = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith('#'):
            break
        lines.append(line)
    return lines


def _command(path: Path):
    """The ``accelerate launch`` command of the top comment: (num_processes, train.py argv)."""
    commands = [line.lstrip('# ').strip() for line in _top_comments(path) if 'accelerate launch' in line]
    assert len(commands) == 1, f'{path.name}: expected one `accelerate launch` command in the top comment block'
    tokens = shlex.split(commands[0])
    assert tokens[:2] == ['accelerate', 'launch'] and 'train.py' in tokens, commands[0]
    assert '--num_processes' in tokens, f'{path.name}: the command must say how many processes it runs'
    num_processes = int(tokens[tokens.index('--num_processes') + 1])
    argv = tokens[tokens.index('train.py') + 1:]
    assert argv[argv.index('-c') + 1] == f'configs/{path.name}', f'{path.name}: the command runs another file'
    return num_processes, argv


def _parse_command(path: Path, tmp_path: Path):
    num_processes, argv = _command(path)
    argv = list(argv)
    argv[argv.index('-c') + 1] = str(path)
    argv[argv.index('--data-dir') + 1] = str(tmp_path)
    args, _ = parse_args(argv)
    check_args(args)
    return num_processes, args


def test_the_three_recipes_exist():
    assert {p.name for p in CONFIGS} >= set(EXPECTED)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_train_parser(path, tmp_path):
    args, text = parse_args(['-c', str(path), '--data-dir', str(tmp_path)])
    check_args(args)
    assert args.config == str(path) and args.data_dir == str(tmp_path)
    assert 'mile_kt' in text  # the resolved args dump, as train.py writes it


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_names_its_paper_number(path):
    text = path.read_text()
    numbers = [line for line in text.splitlines() if re.match(r'\s*#\s*paper:.*\d+(\.\d+)?\s*%', line)]
    assert numbers, f'{path.name}: no "# paper: <number>%" comment with the paper\'s result'


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_command_runs_it(path, tmp_path):
    """The command in the top comment parses, and its process count gives the paper's global batch."""
    num_processes, args = _parse_command(path, tmp_path)
    expected = EXPECTED.get(path.name)
    if expected is None:
        return
    assert args.batch_size * num_processes * args.grad_accum_steps == expected['global_batch']
    lr = _train_script().scaled_lr(args, num_processes)
    assert lr == pytest.approx(expected['lr'], rel=1e-9)
    for key, value in expected.items():
        if key in ('global_batch', 'lr'):
            continue
        got = getattr(args, key)
        assert (got == pytest.approx(value)) if isinstance(value, float) else (got == value), (path.name, key, got)


def test_mile_recipe_is_mile_with_eq1_and_official_init(tmp_path):
    args, _ = parse_args(['-c', str(MILE), '--data-dir', str(tmp_path)])
    check_args(args)
    assert task_name(args) == 'mile' and loss_name(args) == 'bce'
    # Eq. 1: BCE summed over classes, averaged over samples (the default under --mile)
    assert loss_kwargs(args, soft_targets=False)['sum_classes'] is True
    assert args.head_init_bias == pytest.approx(-math.log(1000), abs=1e-6)
    assert args.smoothing == 0.0 and args.mile_student in (None, 'continue')


def _documented_translation(path: Path, key: str):
    """(our value, the paper/official K) from a line ``key: N  # paper/official K=M ...``."""
    for line in path.read_text().splitlines():
        m = re.match(rf'{key}:\s*(\d+)\s*#.*\bK=(\d+)', line)
        if m:
            return int(m.group(1)), int(m.group(2))
    raise AssertionError(f'{path.name}: no "{key}: N  # ... K=M" line documenting the translation')


def _official_phases(k1: int, k2: int, n: int):
    """Phase of each update under the official loop's counting (re-expressed, trainval_iters.py):
    before an update, a teacher phase ends when its count + 1 reaches k1, a student phase when its
    count + 1 reaches k2; so each phase trains k - 1 updates."""
    phases, phase, count = [], None, 0
    for _ in range(n):
        if phase == 'teacher' and count + 1 == k1:
            phase, count = 'student', 0
        if phase is None or (phase == 'student' and count + 1 == k2):
            phase, count = 'teacher', 0
        phases.append(phase)
        count += 1
    return phases


def _our_phases(kt: int, ks: int, n: int):
    task = MILeTask(nn.Linear(2, 3), kt=kt, ks=ks, rho=0.25, verbose=False)
    phases = []
    for _ in range(n):
        phases.append(task.phase)
        task.step()
    return phases


def test_mile_update_counts_translate_official_k_to_k_minus_1(tmp_path):
    args, _ = parse_args(['-c', str(MILE), '--data-dir', str(tmp_path)])
    kt, paper_kt = _documented_translation(MILE, 'mile_kt')
    ks, paper_ks = _documented_translation(MILE, 'mile_ks')
    assert (args.mile_kt, args.mile_ks) == (kt, ks)
    assert (kt, ks) == (paper_kt - 1, paper_ks - 1)
    assert ks <= kt  # paper: ks <= kt
    # the translation is exact: three cycles of the official schedule == ours, update for update
    n = 3 * (paper_kt + paper_ks)
    official = _official_phases(paper_kt, paper_ks, n)
    assert _our_phases(args.mile_kt, args.mile_ks, n) == official
    assert _our_phases(paper_kt, paper_ks, n) != official  # taking the paper's K literally would not be
