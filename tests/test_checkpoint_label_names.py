"""train.py stores the training data's class names in its checkpoints; `export` of an interrupted run
(no config.json yet) names the classes with them; older checkpoints export as before."""
import json

import numpy as np
import pytest
import torch

timm = pytest.importorskip('timm')
from PIL import Image  # noqa: E402

from timm_multilabel import cli  # noqa: E402
from timm_multilabel.hub import checkpoint_label_names  # noqa: E402

CLASSES = ['cat', 'dog', 'emu']  # sorted, as timm's folder reader indexes them


@pytest.fixture(scope='module')
def one_epoch_run(tmp_path_factory):
    import train
    root = tmp_path_factory.mktemp('names')
    rng = np.random.default_rng(0)
    for split in ('train', 'validation'):
        for c in CLASSES:
            (root / 'data' / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                    root / 'data' / split / c / f'{i}.png')
    out = root / 'out'
    train.main(['--data-dir', str(root / 'data'), '--dataset', '', '--model', 'test_resnet', '--img-size', '32',
                '--epochs', '1', '-b', '4', '--workers', '0', '--train-num-samples', '12', '--output', str(out)])
    return out


def test_checkpoints_hold_the_class_names_and_load_safely(one_epoch_run):
    for name in ('last.pth.tar', 'checkpoint-0.pth.tar'):
        ckpt = torch.load(one_epoch_run / name, map_location='cpu', weights_only=True)
        assert ckpt['label_names'] == CLASSES
    model = timm.create_model('test_resnet', num_classes=3)
    timm.models.load_checkpoint(model, str(one_epoch_run / 'last.pth.tar'), use_ema=False, weights_only=True)
    assert timm.models.resume_checkpoint(model, str(one_epoch_run / 'last.pth.tar'), weights_only=True) == 1


def test_export_without_config_json_takes_the_checkpoints_names(one_epoch_run, tmp_path):
    (one_epoch_run / 'config.json').unlink()  # the run folder as an interrupted run leaves it
    assert cli.main(['export', str(one_epoch_run), str(tmp_path / 'hf')]) == 0
    assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['label_names'] == CLASSES

    ckpt = torch.load(one_epoch_run / 'last.pth.tar', map_location='cpu', weights_only=True)
    del ckpt['label_names']  # a checkpoint of an older run: no names, as before
    run = tmp_path / 'old-run'
    run.mkdir()
    torch.save(ckpt, run / 'last.pth.tar')
    assert cli.main(['export', str(run), str(tmp_path / 'old')]) == 0
    assert 'label_names' not in json.loads((tmp_path / 'old' / 'config.json').read_text())


def test_stored_names_come_after_config_json_and_before_the_class_map(tmp_path):
    model = timm.create_model('test_resnet', num_classes=3)
    class_map = tmp_path / 'map.txt'
    class_map.write_text('x\ny\nz\n')
    args = {'class_map': str(class_map)}
    ckpt = tmp_path / 'last.pth.tar'
    assert checkpoint_label_names(ckpt, model, args, CLASSES) == CLASSES
    assert checkpoint_label_names(ckpt, model, args, ['a', 'b']) == ['x', 'y', 'z']  # not one per class
    assert checkpoint_label_names(ckpt, model, {}, None) is None
    (tmp_path / 'config.json').write_text(json.dumps(
        {'architecture': 'test_resnet', 'num_classes': 3, 'label_names': ['p', 'q', 'r']}))
    assert checkpoint_label_names(ckpt, model, args, CLASSES) == ['p', 'q', 'r']
