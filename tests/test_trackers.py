"""Experiment trackers through Accelerate (--log-with, timm's --log-wandb) and the one-process launch warning."""
import csv
import importlib.util
import math
from types import SimpleNamespace

import pytest

from timm_multilabel.errors import UserError
from timm_multilabel.training.args import check_args, parse_args
from timm_multilabel.training.trackers import (
    DEFAULT_PROJECT, epoch_values, single_process_warning, start_trackers, tracker_config, tracker_names)


def _check(*argv):
    args, _ = parse_args(list(argv))
    check_args(args)
    return args


def test_tracker_names_and_refusals():
    assert tracker_names(_check('--log-with', 'TensorBoard', 'tensorboard')) == ['tensorboard']
    assert tracker_names(_check()) == []
    with pytest.raises(UserError, match=r'^--log-with tensorbord: not an Accelerate tracker; expected one of .*tensorboard'):
        _check('--log-with', 'tensorbord')
    with pytest.raises(UserError, match=r'^--wandb-project applies with --log-wandb$'):
        _check('--wandb-project', 'p')
    with pytest.raises(UserError, match=r'^--wandb-tags applies with --log-wandb$'):
        _check('--log-with', 'tensorboard', '--wandb-tags', 'a')
    if importlib.util.find_spec('wandb') is None:  # timm only warns; we refuse before any work
        with pytest.raises(UserError, match=r'^--log-wandb: the wandb package is not installed \(pip install wandb\)$'):
            _check('--log-wandb')
    if importlib.util.find_spec('mlflow') is None:
        with pytest.raises(UserError, match=r'^--log-with mlflow: the mlflow package is not installed'):
            _check('--log-with', 'mlflow')


def test_wandb_gets_timm_s_project_tags_and_resume_id():
    calls = []
    accelerator = SimpleNamespace(init_trackers=lambda *a, **k: calls.append((a, k)))
    args = SimpleNamespace(log_with=['tensorboard'], log_wandb=True, wandb_project='proj', wandb_tags=['a', 'b'],
                           wandb_resume_id='r1', resume='runs/x', scale=[0.5, 1.0], model_kwargs={'k': 1}, lr=None)
    start_trackers(accelerator, args, output_dir='runs/x')
    (project,), kwargs = calls[0]
    assert project == 'proj'
    assert kwargs['init_kwargs'] == {'wandb': {'name': 'x', 'tags': ['a', 'b'], 'id': 'r1', 'resume': 'must'}}
    assert kwargs['config']['scale'] == '[0.5, 1.0]' and kwargs['config']['model_kwargs'] == "{'k': 1}"
    assert kwargs['config']['lr'] is None and kwargs['config']['log_wandb'] is True
    args.wandb_project, args.log_wandb, args.wandb_resume_id = None, False, ''
    start_trackers(accelerator, args, output_dir='runs/x')
    assert calls[1][0] == (DEFAULT_PROJECT,) and calls[1][1]['init_kwargs'] == {}
    args.log_with = None
    start_trackers(accelerator, args, output_dir='runs/x')
    assert len(calls) == 2  # no trackers: nothing started


def test_epoch_values_are_the_numbers_of_the_row():
    row = {'epoch': 3, 'train_loss': 0.5, 'num_updates': 12, 'top1': None, 'mAP': math.nan, 'flag': True, 'x': 'y'}
    assert epoch_values(row) == {'train_loss': 0.5, 'num_updates': 12}
    assert tracker_config(SimpleNamespace(a=[1], b=1.5, c=None)) == {'a': '[1]', 'b': 1.5, 'c': None}


def test_single_process_warning_only_when_accelerate_started_one_of_several():
    # what accelerate launch (1.16) sets, read from its launcher: --num_processes 2 without --multi_gpu
    simple = {'ACCELERATE_MIXED_PRECISION': 'no', 'ACCELERATE_USE_CPU': 'False', 'MASTER_ADDR': '127.0.0.1',
              'MASTER_PORT': '29500'}
    message = single_process_warning(1, simple)
    assert 'accelerate launch --multi_gpu --num_processes N' in message and '\n' not in message
    assert single_process_warning(2, {**simple, 'WORLD_SIZE': '2'}) is None  # --multi_gpu: torchrun's ranks
    assert single_process_warning(1, {'ACCELERATE_MIXED_PRECISION': 'no'}) is None  # accelerate launch, 1 asked
    assert single_process_warning(1, {}) is None  # python train.py


@pytest.mark.slow
def test_tensorboard_scalars_equal_summary_csv(tmp_path):
    """A 2-epoch run with --log-with tensorboard: each epoch's row of summary.csv is in the event files
    at step = epoch (read back with TensorBoard's EventAccumulator)."""
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import train
    out = tmp_path / 'run'
    train.main(['--dataset', 'digits-grid', '--model', 'test_resnet', '--train-num-samples', '64',
                '--val-num-samples', '32', '-b', '32', '--workers', '0', '--epochs', '2', '--img-size', '16',
                '--log-with', 'tensorboard', '--output', str(out)])
    rows = list(csv.DictReader(open(out / 'summary.csv')))
    assert [r['epoch'] for r in rows] == ['0', '1']
    events = EventAccumulator(str(out / DEFAULT_PROJECT))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    numeric = {k for k, v in rows[0].items() if k != 'epoch' and v not in ('', None)}
    assert {'train_loss', 'eval_loss', 'top1', 'mAP', 'lr', 'num_updates'} <= numeric
    assert tags == numeric
    for tag in numeric:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1]
        for s, row in zip(scalars, rows):
            assert s.value == pytest.approx(float(row[tag]), rel=1e-6, abs=1e-6), tag  # float32 in the events
    hparams = list((out / DEFAULT_PROJECT).glob('*/hparams.yml'))
    assert len(hparams) == 1 and 'model: test_resnet' in hparams[0].read_text()
