"""train.py's checkpoints without train.py: which epochs CheckpointKeeper keeps, last/best files, RNG
state round trips, the run-folder resolver and the safe reader (timm_multilabel/checkpoint_files.py)."""
import argparse
import os
import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from timm_multilabel.checkpoint_files import (
    EXPORT_PREFER, RESUME_PREFER, checkpoint_args, load_checkpoint_file, pick_state_dict, resolve_checkpoint_path)
from timm_multilabel.errors import UserError
from timm_multilabel.fileio import FILE_MODE
from timm_multilabel.training.checkpoint import (
    BEST, LAST, CheckpointKeeper, atomic_torch_save, resolve_resume_path, rng_state, set_rng_state)


def _epochs_on_disk(folder):
    return sorted(int(p.name.split('-')[1].split('.')[0]) for p in folder.glob('checkpoint-*.pth.tar'))


def _saved_epoch(path):
    return load_checkpoint_file(path)['epoch']


def _run(keeper, metrics):
    return [keeper.save({'epoch': e}, e, m) for e, m in enumerate(metrics)]


# ------------------------------------------------------------------------------------------------
# CheckpointKeeper


def test_keeper_keeps_the_best_epochs_and_points_last_and_best(tmp_path):
    keeper = CheckpointKeeper(tmp_path, max_history=2)
    is_best = _run(keeper, [1.0, 5.0, 3.0, 4.0, 2.0])
    assert is_best == [True, True, False, False, False]
    assert _epochs_on_disk(tmp_path) == [1, 3]
    assert (keeper.best_epoch, keeper.best_metric) == (1, 5.0)
    assert _saved_epoch(tmp_path / BEST) == 1
    assert _saved_epoch(tmp_path / LAST) == 4
    assert [e for _, e in keeper.history] == [1, 3]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'temporary files left behind'
    assert all(p.stat().st_mode & 0o777 == FILE_MODE for p in tmp_path.iterdir())


def test_keeper_decreasing_metric_and_nan_is_the_worst(tmp_path):
    keeper = CheckpointKeeper(tmp_path, decreasing=True, max_history=2)
    is_best = _run(keeper, [5.0, 1.0, float('nan'), 3.0, 0.5])
    assert is_best == [True, True, False, False, True]
    assert _epochs_on_disk(tmp_path) == [1, 4]
    assert _saved_epoch(tmp_path / BEST) == 4


def test_keeper_without_metric_never_writes_best(tmp_path):
    keeper = CheckpointKeeper(tmp_path, max_history=1)
    assert _run(keeper, [None, None]) == [False, False]
    assert not (tmp_path / BEST).exists()
    assert _saved_epoch(tmp_path / LAST) == 1
    assert len(_epochs_on_disk(tmp_path)) == 1


def test_save_last_writes_last_only_with_keeper_state(tmp_path):
    keeper = CheckpointKeeper(tmp_path)
    keeper.save({'epoch': 0}, 0, 7.0)
    keeper.save_last({'epoch': 1, 'epoch_progress': {'batches': 3}})
    assert _epochs_on_disk(tmp_path) == [0]
    last = load_checkpoint_file(tmp_path / LAST)
    assert last['epoch'] == 1 and last['epoch_progress'] == {'batches': 3}
    assert last['keeper']['best_epoch'] == 0 and last['keeper']['best_metric'] == 7.0
    assert _saved_epoch(tmp_path / BEST) == 0
    # last was a second name of checkpoint-0 (a hard link): the mid-epoch save replaced it, not wrote into it
    assert _saved_epoch(tmp_path / 'checkpoint-0.pth.tar') == 0


def test_keeper_links_last_and_best_to_the_epoch_file_like_timm(tmp_path):
    keeper = CheckpointKeeper(tmp_path)
    keeper.save({'epoch': 0, 'w': torch.arange(4)}, 0, 1.0)
    epoch_file = tmp_path / 'checkpoint-0.pth.tar'
    assert os.path.samefile(epoch_file, tmp_path / LAST) and os.path.samefile(epoch_file, tmp_path / BEST)
    keeper.save({'epoch': 1}, 1, 0.5)  # not the best: best keeps epoch 0's file, last moves on
    assert os.path.samefile(epoch_file, tmp_path / BEST)
    assert os.path.samefile(tmp_path / 'checkpoint-1.pth.tar', tmp_path / LAST)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'temporary files left behind'


def test_atomic_duplicate_copies_where_hard_links_fail(tmp_path, monkeypatch):
    from timm_multilabel import fileio
    src, dst = tmp_path / 'a.bin', tmp_path / 'b.bin'
    src.write_bytes(b'new')
    dst.write_bytes(b'old')

    def no_links(*a, **k):
        raise OSError(1, 'Operation not permitted')
    monkeypatch.setattr(fileio.os, 'link', no_links)
    fileio.atomic_duplicate(src, dst)
    assert dst.read_bytes() == b'new' and not os.path.samefile(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.bin', 'b.bin']


def test_keeper_state_round_trip_continues_like_an_uninterrupted_keeper(tmp_path):
    metrics = [2.0, 6.0, 1.0, 5.0, 3.0, 4.0]
    whole = CheckpointKeeper(tmp_path / 'whole', max_history=3)
    _run(whole, metrics)

    first = CheckpointKeeper(tmp_path / 'resumed', max_history=3)
    for e in range(3):
        first.save({'epoch': e}, e, metrics[e])
    state = load_checkpoint_file(tmp_path / 'resumed' / LAST)['keeper']  # weights_only: tuples became lists
    second = CheckpointKeeper(tmp_path / 'resumed', max_history=3)
    second.load_state(state)
    for e in range(3, 6):
        second.save({'epoch': e}, e, metrics[e])
    assert second.state() == whole.state()
    assert _epochs_on_disk(tmp_path / 'resumed') == _epochs_on_disk(tmp_path / 'whole') == [1, 3, 5]


def test_atomic_torch_save_is_importable_from_training_checkpoint(tmp_path):
    atomic_torch_save({'x': torch.arange(3)}, tmp_path / 'a.pth')
    assert torch.equal(load_checkpoint_file(tmp_path / 'a.pth')['x'], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.pth']


# ------------------------------------------------------------------------------------------------
# RNG state


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(4), float(np.random.randn())


def test_rng_state_round_trip_through_a_checkpoint_reproduces_the_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # a cached gaussian is part of numpy's state
    atomic_torch_save({'rng': rng_state()}, tmp_path / 'c.pth')
    want = _draws()
    _draws()  # move every generator on
    set_rng_state(load_checkpoint_file(tmp_path / 'c.pth')['rng'])
    got = _draws()
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2]) and got[3] == want[3]


# ------------------------------------------------------------------------------------------------
# resolver


def _touch_checkpoints(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.save({'name': name}, folder / name)


def test_resolver_preference_order(tmp_path):
    run = tmp_path / 'run'
    _touch_checkpoints(run, 'checkpoint-3.pth.tar', LAST, BEST)
    assert resolve_checkpoint_path(run, EXPORT_PREFER, 'checkpoint') == run / BEST
    assert resolve_checkpoint_path(run, RESUME_PREFER, '--resume') == run / LAST
    assert resolve_resume_path(str(run)) == run / LAST
    (run / BEST).unlink()
    assert resolve_checkpoint_path(run, EXPORT_PREFER, 'checkpoint') == run / LAST
    file = run / 'checkpoint-3.pth.tar'
    assert resolve_checkpoint_path(file, EXPORT_PREFER, 'checkpoint') == file


def test_resolver_falls_back_to_the_highest_epoch_not_the_last_name(tmp_path):
    run = tmp_path / 'run'
    _touch_checkpoints(run, 'checkpoint-2.pth.tar', 'checkpoint-10.pth.tar', 'checkpoint-9.pth.tar')
    (run / '.checkpoint-11.pth.tar.tmp-1-x').write_bytes(b'partial')  # an interrupted write is no checkpoint
    assert resolve_resume_path(str(run)) == run / 'checkpoint-10.pth.tar'
    assert resolve_checkpoint_path(run, EXPORT_PREFER, 'checkpoint') == run / 'checkpoint-10.pth.tar'


@pytest.mark.parametrize('flag, prefer', [('--resume', RESUME_PREFER), ('checkpoint', EXPORT_PREFER)])
def test_resolver_errors_are_one_line_and_start_with_the_flag(tmp_path, flag, prefer):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'summary.json').write_text('{}')
    with pytest.raises(UserError) as e:
        resolve_checkpoint_path(empty, prefer, flag)
    msg = str(e.value)
    assert msg.startswith(f'{flag} {empty}: the folder holds no checkpoint') and '\n' not in msg
    assert all(name in msg for name in prefer) and 'checkpoint-N.pth.tar' in msg
    with pytest.raises(UserError) as e:
        resolve_checkpoint_path(tmp_path / 'nowhere', prefer, flag)
    assert str(e.value) == f'{flag} {tmp_path / "nowhere"}: no such file or folder'


# ------------------------------------------------------------------------------------------------
# reader


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_reader_refuses_a_pickle_that_would_run_code_without_running_it(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _RunsCode(marker)}, path)
    with pytest.raises(UserError) as e:
        load_checkpoint_file(path)
    msg = str(e.value)
    assert msg.startswith(f'checkpoint {path}: refused') and 'system' in msg and '\n' not in msg
    assert not marker.exists()


def test_reader_accepts_timm_train_namespace_args(tmp_path):
    path = tmp_path / 'timm.pth.tar'
    args = argparse.Namespace(model='resnet18', lr=0.1, model_kwargs={})
    torch.save({'arch': 'resnet18', 'state_dict': {'fc.weight': torch.zeros(2, 3)}, 'args': args}, path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses it
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint_file(path)
    assert ckpt['args'] == args
    assert checkpoint_args(ckpt) == {'model': 'resnet18', 'lr': 0.1, 'model_kwargs': {}}


@pytest.mark.parametrize('kind, expect', [
    ('missing', 'no such file'), ('garbage', 'cannot be loaded'), ('truncated', 'cannot be loaded'),
    ('list', 'expected a dict, found list'), ('bad-safetensors', 'cannot be read as safetensors'),
])
def test_reader_errors_are_one_line_and_name_the_file(tmp_path, kind, expect):
    path = tmp_path / ('w.safetensors' if kind == 'bad-safetensors' else f'{kind}.pth')
    if kind in ('garbage', 'bad-safetensors'):
        path.write_bytes(b'not a checkpoint at all')
    elif kind == 'truncated':
        torch.save({'w': torch.randn(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == 'list':
        torch.save([torch.ones(1)], path)
    with pytest.raises(UserError) as e:
        load_checkpoint_file(path)
    msg = str(e.value)
    assert msg.startswith(f'checkpoint {path}:') and expect in msg and '\n' not in msg


def test_reader_reads_safetensors(tmp_path):
    save_file({'a': torch.arange(4.)}, str(tmp_path / 'w.safetensors'))
    assert torch.equal(load_checkpoint_file(tmp_path / 'w.safetensors')['a'], torch.arange(4.))


def test_pick_state_dict_strips_wrappers_and_picks_ema(tmp_path):
    w, e = torch.ones(2), torch.zeros(2)
    ckpt = {'state_dict': {'module._orig_mod.fc.weight': w}, 'state_dict_ema': {'_orig_mod.fc.weight': e},
            'epoch': 3}
    assert list(pick_state_dict(ckpt, 'c')) == ['fc.weight']
    assert pick_state_dict(ckpt, 'c')['fc.weight'] is w
    assert pick_state_dict(ckpt, 'c', use_ema=True)['fc.weight'] is e
    assert pick_state_dict({'module.fc.weight': w}, 'c') == {'fc.weight': w}
    with pytest.raises(UserError, match='no EMA weights'):
        pick_state_dict({'fc.weight': w}, 'c', use_ema=True)
    with pytest.raises(UserError, match="c: no weights .* keys are \\['epoch'\\]"):
        pick_state_dict({'epoch': 1}, 'c')
