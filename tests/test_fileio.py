"""Atomic writes, stale temporary files and the output-folder lock."""
import os
import stat

import pytest

from timm_multilabel import UserError
from timm_multilabel.fileio import FILE_MODE, FolderLock, atomic_path, atomic_write_text, remove_stale_temps, write_json


def test_atomic_write_leaves_the_old_file_or_the_whole_new_one(tmp_path):
    path = tmp_path / 'a.txt'
    atomic_write_text(path, 'old')
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('half')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']  # the temporary file is gone
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE  # not mkstemp's 0600


def test_write_json_numbers_and_paths(tmp_path):
    import numpy as np
    import torch
    write_json(tmp_path / 'x.json', {'a': np.float32(0.5), 'b': torch.tensor(3), 'c': tmp_path, 'd': (1, 2)})
    assert (tmp_path / 'x.json').read_text().replace(' ', '').replace('\n', '') == \
        f'{{"a":0.5,"b":3,"c":"{tmp_path}","d":[1,2]}}'


def test_stale_temps_of_dead_processes_only_are_removed(tmp_path):
    dead = tmp_path / '.last.pth.tar.tmp-999999'
    live = tmp_path / f'.summary.json.tmp-{os.getpid()}-abc'
    keep = tmp_path / 'last.pth.tar'
    for p in (dead, live, keep):
        p.write_text('x')
    assert remove_stale_temps(tmp_path) == [dead]
    assert live.exists() and keep.exists()


def test_a_second_run_on_a_locked_folder_is_refused_in_one_line(tmp_path):
    first = FolderLock(tmp_path / 'out', '--output').acquire()
    with pytest.raises(UserError, match=rf'--output .*out: another run \(pid {os.getpid()}\) is writing there'):
        FolderLock(tmp_path / 'out', '--output').acquire()
    first.release()
    with FolderLock(tmp_path / 'out', '--output'):  # free again
        pass


@pytest.mark.slow
def test_train_py_refuses_an_output_another_run_is_writing(tmp_path, run):
    with FolderLock(tmp_path / 'out', '--output'):
        proc = run(['train.py', '--model', 'test_resnet', '--train-num-samples', '64', '--val-num-samples', '32',
                    '-b', '16', '--workers', '0', '--epochs', '1', '--output', tmp_path / 'out', '--overwrite'],
                   check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('train.py: error: --output ') and 'another run (pid' in last, last
    assert sorted(os.listdir(tmp_path / 'out')) == ['.lock']  # nothing written
