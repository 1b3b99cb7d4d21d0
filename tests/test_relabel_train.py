"""train.py --relabel-maps end to end on oracle maps, and its one-line refusals before any training."""
import argparse
import json

import pytest
import torch

from timm_multilabel.data.digits_grid import DigitsGrid
from timm_multilabel.data.digits_maps import oracle_maps
from timm_multilabel.errors import UserError
from timm_multilabel.relabel.digit_maps import write_oracle_maps
from timm_multilabel.relabel.writer import write_maps_folder
from timm_multilabel.training.relabel import build_relabel_training

N_TRAIN = 64
SEED = 3
TINY = ['--dataset', 'digits-grid', '--model', 'test_resnet', '--img-size', '24', '--train-num-samples', str(N_TRAIN),
        '--val-num-samples', '32', '-b', '16', '--workers', '0', '--seed', str(SEED), '--epochs', '1',
        '--log-interval', '1000', '--checkpoint-hist', '1']


@pytest.fixture(scope='module')
def train_set():
    # the training set train.py builds for TINY: digits-grid, split train, --seed, --train-num-samples
    return DigitsGrid('train', num_samples=N_TRAIN, seed=SEED)


@pytest.fixture(scope='module')
def maps(train_set, tmp_path_factory):
    return write_oracle_maps(train_set, tmp_path_factory.mktemp('maps') / 'oracle')


def _args(path, mode='local'):
    return argparse.Namespace(relabel_maps=str(path), relabel_fill=0.0, relabel_mode=mode)


_TRANSFORM = dict(input_size=(3, 24, 24), scale=(0.5, 1.0), ratio=(0.9, 1.1), hflip=0.0, interpolation='bilinear',
                  mean=(0.5,) * 3, std=(0.5,) * 3)


def test_oracle_maps_feed_the_collate(train_set, maps):
    ds = DigitsGrid('train', num_samples=N_TRAIN, seed=SEED)
    boxed, collate = build_relabel_training(_args(maps), ds, dict(_TRANSFORM), num_classes=10)
    images, targets = collate([boxed[i] for i in range(8)])
    assert images.shape == (8, 3, 24, 24) and targets.shape == (8, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    # every crop covers at least half the grid: its target's argmax is a digit of that grid
    for i in range(8):
        assert int(targets[i].argmax()) in set(train_set.cell_digits(i).ravel().tolist())


def test_maps_missing_training_images_are_refused(train_set, tmp_path):
    short = DigitsGrid('train', num_samples=N_TRAIN - 10, seed=SEED)
    folder = write_oracle_maps(short, tmp_path / 'short')
    with pytest.raises(UserError, match=r"miss 10 of 64 training images \(e.g. 'train/0000(5[4-9]|6[0-3])'\)"):
        build_relabel_training(_args(folder), DigitsGrid('train', num_samples=N_TRAIN, seed=SEED), dict(_TRANSFORM), 10)


def test_maps_with_more_classes_than_the_model_are_refused(train_set, tmp_path):
    scores, classes = oracle_maps(train_set)
    classes = classes.clone()
    classes[0, 1] = 11  # an annotator with 12 classes
    info = dict(annotator='test', input_size=48, map_size=(3, 3), topk=5, dtype='float32', num_classes=12)
    folder = write_maps_folder(tmp_path / 'wide', train_set.image_ids, [(scores, classes)], info)
    with pytest.raises(UserError, match=r'12 classes .* the model has 10'):
        build_relabel_training(_args(folder), DigitsGrid('train', num_samples=N_TRAIN, seed=SEED), dict(_TRANSFORM), 10)


def test_unreadable_map_folders_are_refused(maps, tmp_path):
    ds = DigitsGrid('train', num_samples=N_TRAIN, seed=SEED)
    with pytest.raises(UserError, match='no label-map dataset folder'):
        build_relabel_training(_args(tmp_path / 'nowhere'), ds, dict(_TRANSFORM), 10)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='no dataset card'):
        build_relabel_training(_args(tmp_path / 'empty'), ds, dict(_TRANSFORM), 10)
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(maps, broken)
    shard = next((broken / 'data').glob('train-*.parquet'))
    shard.write_bytes(b'PAR1 this is not a parquet file')
    with pytest.raises(UserError, match=r'(unreadable|corrupt) label-map shard .*train-00000'):
        build_relabel_training(_args(broken), ds, dict(_TRANSFORM), 10)


@pytest.mark.slow
def test_train_py_with_oracle_maps(maps, tmp_path, run):
    out = tmp_path / 'run'
    run(['train.py', *TINY, '--relabel-maps', maps, '--output', out])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['method']['name'] == 'relabel'
    assert summary['method']['maps'] == str(maps) and summary['method']['mode'] == 'local'
    assert summary['num_updates'] == N_TRAIN // 16
    assert all(summary['metrics'][k] is not None for k in ('top1', 'mAP'))


@pytest.mark.slow
@pytest.mark.parametrize('what', ['missing', 'corrupt'])
def test_train_py_refuses_in_one_line_before_training(what, train_set, maps, tmp_path, run):
    if what == 'missing':
        folder = write_oracle_maps(DigitsGrid('train', num_samples=N_TRAIN - 1, seed=SEED), tmp_path / 'm')
        message = f"label maps miss 1 of {N_TRAIN} training images (e.g. 'train/0000{N_TRAIN - 1}')"
    else:
        import shutil
        folder = tmp_path / 'm'
        shutil.copytree(maps, folder)
        next((folder / 'data').glob('train-*.parquet')).write_bytes(b'garbage')
        message = 'label-map shard'
    out = tmp_path / 'run'
    proc = run(['train.py', *TINY, '--relabel-maps', folder, '--output', out], check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('train.py: error: ') and message in lines[-1], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert not out.exists()  # refused before anything was written
