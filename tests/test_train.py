"""train.py end to end: a tiny run's outputs, YAML configs, resume, and refused arguments."""
import csv
import json

import pytest
import torch
import yaml
from conftest import kill_when

TINY = ['--model', 'test_resnet', '--train-num-samples', '256', '--val-num-samples', '128', '-b', '32',
        '--workers', '0', '--seed', '3']
# the resume tests compare two runs exactly: a smaller evaluation set compares them as strictly
TINY_RESUME = ['--model', 'test_resnet', '--train-num-samples', '256', '--val-num-samples', '64', '-b', '32',
               '--workers', '0', '--seed', '3']
METRICS = {'top1', 'real_acc', 'real_f1@0.25', 'real_f1@0.5', 'label_coverage@0.25', 'mAP'}


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    from conftest import run_script
    out = tmp_path_factory.mktemp('run') / 'out'
    # fresh=True: one run started as a user's shell does (the others fork the tests' warm interpreter)
    proc = run_script(['train.py', '--dataset', 'digits-grid', *TINY, '--epochs', '2', '--output', out], fresh=True)
    return out, proc


def test_summary_has_the_documented_keys(tiny_run):
    out, proc = tiny_run
    summary = json.loads((out / 'summary.json').read_text())
    assert set(summary['metrics']) == METRICS
    assert summary['world_size'] == 1
    assert summary['eval_samples'] == summary['test_size'] == 128
    assert summary['train_seconds'] > 0
    assert summary['args']['model'] == 'test_resnet'
    for key in METRICS:
        value = summary['metrics'][key]
        assert value is not None
        if key == 'label_coverage@0.25':
            assert 1.0 <= value <= 10.0  # the argmax is always predicted
        else:
            assert 0.0 <= value <= 100.0
    # ReaL accuracy counts a prediction right when it is any digit of the grid: never below top-1.
    assert summary['metrics']['real_acc'] >= summary['metrics']['top1']
    assert 'ReaL-F1@0.25' in proc.stdout  # the printed results table


def test_run_leaves_log_curves_and_checkpoints(tiny_run):
    out, _ = tiny_run
    rows = list(csv.DictReader(open(out / 'summary.csv')))
    assert [int(r['epoch']) for r in rows] == [0, 1]
    assert float(rows[-1]['top1']) == pytest.approx(json.loads((out / 'summary.json').read_text())['metrics']['top1'])
    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    for name in ('last.pth.tar', 'model_best.pth.tar', 'checkpoint-1.pth.tar'):
        ckpt = torch.load(out / name, map_location='cpu', weights_only=True)
        assert ckpt['arch'] == 'test_resnet' and 'state_dict' in ckpt and 'optimizer' in ckpt
    assert not list(out.glob('.*tmp*')), 'temporary files left behind'


def test_output_holding_a_run_is_refused(tiny_run, run):
    out, _ = tiny_run
    proc = run(['train.py', *TINY, '--epochs', '1', '--output', out], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count('\n') == 0 and 'holds another run' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_yaml_config_sets_defaults_and_flags_win(tmp_path, run):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(yaml.safe_dump({'model': 'test_resnet', 'epochs': 1, 'batch_size': 16, 'seed': 5,
                                   'train_num_samples': 64, 'val_num_samples': 32, 'workers': 0, 'lr': 0.01}))
    out = tmp_path / 'out'
    run(['train.py', '-c', cfg, '--lr', '0.003', '--output', out])
    args = json.loads((out / 'summary.json').read_text())['args']
    assert args['batch_size'] == 16 and args['seed'] == 5 and args['epochs'] == 1
    assert args['lr'] == pytest.approx(0.003)  # command line beats the YAML file


@pytest.mark.parametrize('argv, message', [
    (['--epochs', '0'], '--epochs 0'),
    (['--mixup', '0.2', '-b', '15'], 'even batch size'),
    (['--jsd-loss'], '--jsd-loss'),
    (['--dataset', '', '--data-dir', '/no/such/dir'], '/no/such/dir'),
    (['--dataset', ''], 'needs --data-dir'),
    (['-c', '/no/such.yaml'], '/no/such.yaml'),
    (['--relabel-mode', 'global'], 'needs --relabel-maps'),
])
def test_bad_arguments_are_refused_in_one_line(tmp_path, run, argv, message):
    proc = run(['train.py', *TINY, '--output', tmp_path / 'out', *argv], check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert '\n' not in err and message in err and 'Traceback' not in err
    assert not (tmp_path / 'out').exists(), 'nothing may be written for refused arguments'


def test_unknown_yaml_key_is_refused(tmp_path, run):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('modle: test_resnet\n')
    proc = run(['train.py', '-c', cfg], check=False)
    assert proc.returncode == 2 and 'modle' in proc.stderr and 'Traceback' not in proc.stderr


def _kill_after_first_checkpoint(argv, out, timeout=300):
    """Start train.py, SIGKILL it as soon as its first checkpoint is on disk."""
    kill_when(['train.py', *argv], lambda: (out / 'last.pth.tar').exists(), timeout=timeout, what='train.py')


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, run):
    full, part = tmp_path / 'full', tmp_path / 'part'
    # --deterministic: GPU kernels too (a CPU run is deterministic anyway); killed after epoch 0, resumed for 2
    argv = [*TINY_RESUME, '--epochs', '3', '--mixup', '0.2', '--model-ema', '--model-ema-decay', '0.9', '--deterministic']
    run(['train.py', *argv, '--output', full])
    _kill_after_first_checkpoint([*argv, '--output', part], part)
    assert not (part / 'summary.json').exists()
    run(['train.py', *argv, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics']
    assert a['num_updates'] == b['num_updates']
    wa = torch.load(full / 'last.pth.tar', weights_only=True)
    wb = torch.load(part / 'last.pth.tar', weights_only=True)
    for key in ('state_dict', 'state_dict_ema'):
        assert all(torch.equal(wa[key][k], wb[key][k]) for k in wa[key]), key


@pytest.mark.slow
def test_mid_epoch_resume_matches_an_uninterrupted_run_with_any_workers(tmp_path, run):
    full, part = tmp_path / 'full', tmp_path / 'part'
    argv = [*TINY_RESUME, '--epochs', '2', '--mixup', '0.2', '--model-ema', '--model-ema-decay', '0.9',
            '--deterministic']
    run(['train.py', *argv, '--output', full])  # --workers 0, checkpoints at epoch ends only
    # 8 updates an epoch: last.pth.tar first appears 3 updates into epoch 0
    part_argv = [*argv, '--workers', '2', '--checkpoint-every', '3']
    _kill_after_first_checkpoint([*part_argv, '--output', part], part)
    ckpt = torch.load(part / 'last.pth.tar', weights_only=True)
    progress = ckpt['epoch_progress']
    assert progress['batches'] % 3 == 0 and 0 < progress['batches'] < 8
    assert ckpt['epoch'] == progress['epoch'] - 1  # timm's meaning: the last finished epoch
    assert ckpt['num_updates'] == progress['epoch'] * 8 + progress['batches']
    run(['train.py', *part_argv, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics'] and a['num_updates'] == b['num_updates'] == 16
    wa = torch.load(full / 'last.pth.tar', weights_only=True)
    wb = torch.load(part / 'last.pth.tar', weights_only=True)
    for key in ('state_dict', 'state_dict_ema'):
        assert all(torch.equal(wa[key][k], wb[key][k]) for k in wa[key]), key
    assert 'epoch_progress' not in wb  # the last checkpoint of a finished run is an epoch's


@pytest.mark.slow
def test_mile_resume_continues_the_generation(tmp_path, run):
    full, part = tmp_path / 'full', tmp_path / 'part'
    # 8 updates an epoch with kt=3, ks=2: the kill lands mid-generation, inside a student phase.
    # killed after epoch 0 (update 8, generation 1's student phase), resumed for epoch 1
    argv = [*TINY_RESUME, '--epochs', '2', '--mile', '--mile-kt', '3', '--mile-ks', '2', '--mile-rho', '0.1',
            '--deterministic']
    run(['train.py', *argv, '--output', full])
    _kill_after_first_checkpoint([*argv, '--output', part], part)
    ckpt = torch.load(part / 'last.pth.tar', weights_only=True)
    assert ckpt['task_state']['phase'] == 'student' and 'teacher' in ckpt['task_state']
    run(['train.py', *argv, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics'] and a['mile'] == b['mile']


@pytest.mark.slow
def test_separate_student_resumes_inside_a_teacher_phase(tmp_path, run):
    full, part = tmp_path / 'full', tmp_path / 'part'
    # kt=3, ks=2: updates 6-8 are generation 1's teacher phase; the first checkpoint is at update 7
    argv = [*TINY_RESUME, '--epochs', '2', '--mile', '--mile-kt', '3', '--mile-ks', '2', '--mile-student', 'separate',
            '--checkpoint-every', '7', '--deterministic']
    run(['train.py', *argv, '--output', full])
    _kill_after_first_checkpoint([*argv, '--output', part], part)
    ckpt = torch.load(part / 'last.pth.tar', weights_only=True)
    state = ckpt['task_state']
    assert state['phase'] == 'teacher' and state['updates_in_phase'] == 2 and 'student_weights' in state
    run(['train.py', *argv, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics'] and a['mile'] == b['mile'] and a['method']['student'] == 'separate'


def test_unreadable_resume_checkpoint_is_named(tmp_path, run):
    bad = tmp_path / 'last.pth.tar'
    bad.write_bytes(b'not a checkpoint')
    proc = run(['train.py', *TINY, '--output', tmp_path, '--resume', bad], check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_cooldown_epochs_lengthen_the_run_as_in_timm(tmp_path, run):
    out = tmp_path / 'out'
    run(['train.py', '--dataset', 'digits-grid', *TINY, '--epochs', '1', '--cooldown-epochs', '1', '--output', out])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['epochs'] == 2 and summary['num_updates'] == 2 * 256 // 32
    assert [row['epoch'] for row in csv.DictReader(open(out / 'summary.csv'))] == ['0', '1']
