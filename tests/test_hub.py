"""Hub model folders: timm loads them without our package (local-dir: and hf-hub:), the card reports the
run's metrics, push fails cleanly offline, checkpoints (ours and timm's) export to the same folder.
Pushes and downloads over HTTP (a local fake Hub): tests/test_hub_http.py."""
import argparse
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip('timm')
from huggingface_hub import ModelCard  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from timm_multilabel.errors import UserError  # noqa: E402
from timm_multilabel.hub import (  # noqa: E402
    card_metrics, export_checkpoint, load_checkpoint_dict, push_model_folder, save_model_folder,
)

NUM_CLASSES = 5
LABELS = ['cat', 'dog', 'bird', 'fish', 'frog']
DATA_CONFIG = dict(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), input_size=(3, 40, 40), interpolation='bicubic',
                   crop_pct=0.8)
# summary.json-style metrics of a run: real_f1@0.5 was not measured
METRICS = {'top1': 71.25, 'real_acc': 80.5, 'real_f1@0.25': 55.125, 'real_f1@0.5': None,
           'label_coverage@0.25': 1.75, 'mAP': 66.0625}
MILE = {'name': 'mile', 'kt': 10, 'ks': 5, 'rho': 0.25}


def _model(seed=0):
    torch.manual_seed(seed)
    model = timm.create_model('test_resnet', num_classes=NUM_CLASSES)
    # non-trivial batch-norm statistics, so a loader that drops buffers would be caught
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp('model')
    model = _model()
    save_model_folder(model, out, model_name='test_resnet', num_classes=NUM_CLASSES, label_names=LABELS,
                      data_config=DATA_CONFIG, metrics=METRICS, method=MILE, dataset='digits-grid',
                      args={'model': 'test_resnet', 'mile': True, 'lr': 0.01, 'output': Path('/x')})
    return out, model


def test_folder_files_and_timm_config(folder):
    out, model = folder
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'test_resnet'
    assert cfg['num_classes'] == NUM_CLASSES and cfg['num_features'] == model.num_features
    assert cfg['label_names'] == LABELS
    pcfg = cfg['pretrained_cfg']
    assert pcfg['mean'] == [0.1, 0.2, 0.3] and pcfg['std'] == [0.4, 0.5, 0.6]
    assert pcfg['input_size'] == [3, 40, 40] and pcfg['crop_pct'] == 0.8 and pcfg['interpolation'] == 'bicubic'
    assert pcfg['classifier'] == 'fc' and pcfg['num_classes'] == NUM_CLASSES
    assert cfg['timm_multilabel']['method'] == MILE and cfg['timm_multilabel']['probs'] == 'sigmoid'
    weights = load_file(str(out / 'model.safetensors'))
    ref = model.state_dict()
    assert weights.keys() == ref.keys()
    assert all(torch.equal(weights[k], ref[k]) for k in ref)


_LOADER = textwrap.dedent('''
    import sys
    import timm, torch
    from safetensors.torch import save_file
    for name, out in zip(sys.argv[1::2], sys.argv[2::2]):
        model = timm.create_model(name, pretrained=True).eval()
        torch.manual_seed(123)
        x = torch.randn(2, 3, 40, 40)
        with torch.no_grad():
            y = model(x)
        tensors = {'w.' + k: v.contiguous() for k, v in model.state_dict().items()}
        tensors['x'], tensors['y'] = x, y
        save_file(tensors, out)
        cfg = model.pretrained_cfg
        print(repr((cfg['mean'], cfg['std'], cfg['input_size'], cfg.get('label_names'), model.num_classes)))
    assert not any(m.startswith('timm_multilabel') for m in sys.modules), 'timm_multilabel was imported'
''')


@pytest.fixture(scope='module')
def loaded_by_timm(folder, tmp_path_factory):
    """Load the folder in a fresh interpreter that never imports timm_multilabel: as local-dir:PATH, and as
    hf-hub:acme/tiny-mile from an offline huggingface_hub cache (the layout a download leaves)."""
    out, _ = folder
    tmp = tmp_path_factory.mktemp('loaded')
    cache = tmp / 'hub'
    commit = 'a' * 40
    repo = cache / 'models--acme--tiny-mile'
    snap = repo / 'snapshots' / commit
    snap.mkdir(parents=True)
    for f in out.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    names = {'local-dir': f'local-dir:{out}', 'hf-hub': 'hf-hub:acme/tiny-mile'}
    argv = []
    for key, name in names.items():
        argv += [name, str(tmp / f'{key}.safetensors')]
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update({'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1'})
    proc = subprocess.run([sys.executable, '-c', _LOADER, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [eval(line) for line in proc.stdout.strip().splitlines()[-2:]]
    return {key: (load_file(str(tmp / f'{key}.safetensors')), info) for key, info in zip(names, infos)}


def _check_same_model(model, loaded, info):
    ref = model.state_dict()
    assert {k[2:] for k in loaded if k.startswith('w.')} == set(ref)
    assert all(torch.equal(loaded['w.' + k], ref[k]) for k in ref)
    with torch.no_grad():
        y = model(loaded['x'])
    assert torch.equal(loaded['y'], y)
    mean, std, input_size, labels, num_classes = info
    assert tuple(mean) == (0.1, 0.2, 0.3) and tuple(std) == (0.4, 0.5, 0.6)
    assert tuple(input_size) == (3, 40, 40) and list(labels) == LABELS and num_classes == NUM_CLASSES


@pytest.mark.slow
def test_timm_loads_local_dir_without_our_package(folder, loaded_by_timm):
    _check_same_model(folder[1], *loaded_by_timm['local-dir'])


@pytest.mark.slow
def test_timm_loads_hf_hub_id_from_offline_cache(folder, loaded_by_timm):
    _check_same_model(folder[1], *loaded_by_timm['hf-hub'])


def test_card_parses_and_reports_measured_metrics(folder):
    out, _ = folder
    card = ModelCard.load(out / 'README.md')
    data = card.data.to_dict()
    assert data['library_name'] == 'timm' and data['license'] == 'apache-2.0'
    assert data['pipeline_tag'] == 'image-classification'
    for tag in ('image-classification', 'timm', 'multi-label', 'mile'):
        assert tag in data['tags']
    assert data['datasets'] == ['digits-grid']
    (entry,) = data['model-index']
    (result,) = entry['results']
    assert result['task']['type'] == 'image-classification'
    assert result['dataset']['type'] == 'digits-grid'
    reported = {m['type']: m['value'] for m in result['metrics']}
    assert reported == {k: v for k, v in METRICS.items() if v is not None}
    assert card_metrics(out / 'README.md') == reported
    # the method and its settings are in the text
    text = card.text
    assert 'MILe' in text and '`kt`: 10' in text and '`ks`: 5' in text and '`rho`: 0.25' in text
    assert '| Top-1 accuracy | 71.25 |' in text
    assert 'real_f1@0.5' not in data['model-index'][0]['results'][0]['metrics'].__repr__()


def test_card_for_relabel_names_the_map_dataset(tmp_path):
    save_model_folder(_model(), tmp_path, model_name='test_resnet', num_classes=NUM_CLASSES,
                      method={'name': 'relabel', 'maps': 'acme/imagenet-maps', 'fill': 0.0},
                      dataset='hfds/acme/imagenet', metrics={'top1': 50.0}, repo_id='acme/resnet-relabel')
    card = ModelCard.load(tmp_path / 'README.md')
    data = card.data.to_dict()
    assert {'relabel', 'label-pooling'} <= set(data['tags'])
    assert data['datasets'] == ['acme/imagenet', 'acme/imagenet-maps']
    assert data['model-index'][0]['name'] == 'resnet-relabel'
    assert "timm.create_model('hf-hub:acme/resnet-relabel', pretrained=True)" in card.text
    assert json.loads((tmp_path / 'config.json').read_text())['timm_multilabel']['probs'] == 'softmax'


def test_card_without_metrics_and_combined_method(tmp_path):
    save_model_folder(_model(), tmp_path / 'a', model_name='test_resnet', num_classes=NUM_CLASSES,
                      metrics={'top1': None}, dataset='/data/my images', args={'pretrained': True})
    card = ModelCard.load(tmp_path / 'a' / 'README.md')
    data = card.data.to_dict()
    assert 'model-index' not in data and 'datasets' not in data  # a local folder is no Hub dataset id
    assert data['base_model'] == 'timm/test_resnet.r160_in1k'  # fine-tuned from timm's Hub weights
    assert 'No evaluation results' in card.text
    save_model_folder(_model(), tmp_path / 'b', model_name='test_resnet', num_classes=NUM_CLASSES,
                      method={'name': 'mile+relabel', 'kt': 2, 'ks': 1, 'rho': 0.2, 'maps': 'acme/maps'},
                      metrics={'mAP': 12.5})
    data = ModelCard.load(tmp_path / 'b' / 'README.md').data.to_dict()
    assert {'mile', 'relabel'} <= set(data['tags']) and data['datasets'] == ['acme/maps']
    cfg = json.loads((tmp_path / 'b' / 'config.json').read_text())['timm_multilabel']
    assert cfg['probs'] == 'sigmoid' and cfg['method']['maps'] == 'acme/maps'


def test_state_dict_argument_is_what_is_saved(tmp_path):
    model = _model()
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    ema = {f'module.{k}': v for k, v in ema.items()}  # prefixes are stripped
    save_model_folder(model, tmp_path, model_name='test_resnet', num_classes=NUM_CLASSES, state_dict=ema)
    saved = load_file(str(tmp_path / 'model.safetensors'))
    assert torch.equal(saved['fc.weight'], model.fc.weight + 1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=7), 'num_classes=7'),
    (dict(label_names=['a', 'b']), 'label_names has 2 names'),
    (dict(method={'name': 'dino'}), 'method name'),
    (dict(metrics={'top1': 'high'}), "metrics\\['top1'\\]"),
    (dict(state_dict={'fc.weight': torch.zeros(5, 96)}), 'missing keys'),
    (dict(repo_id='not a repo id!'), 'not a valid Hugging Face repo id'),
])
def test_bad_input_refused_before_anything_is_written(tmp_path, kwargs, match):
    args = dict(model_name='test_resnet', num_classes=NUM_CLASSES)
    args.update(kwargs)
    out = tmp_path / 'out'
    with pytest.raises(UserError, match=match):
        save_model_folder(_model(), out, **args)
    assert not out.exists() or not any(out.iterdir())


def test_push_without_token_fails_after_folder_is_complete(folder, monkeypatch):
    out, _ = folder
    import huggingface_hub
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(huggingface_hub, 'get_token', lambda: None)
    with pytest.raises(UserError, match='no Hugging Face token') as e:
        push_model_folder(out, 'acme/tiny-mile')
    assert '\n' not in str(e.value) and str(out) in str(e.value)
    assert (out / 'model.safetensors').is_file() and (out / 'README.md').is_file()


def test_push_offline_and_not_a_folder_are_one_line(folder, monkeypatch):
    """(Pushes over HTTP, their errors and what they upload: tests/test_hub_http.py.)"""
    out, _ = folder
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(UserError, match='HF_HUB_OFFLINE'):
        push_model_folder(out, 'acme/tiny-mile', token='hf_x')
    with pytest.raises(UserError, match='not a model folder'):
        push_model_folder(out / 'nowhere', 'acme/tiny-mile', token='hf_x')


# ------------------------------------------------------------------------------------------------
# checkpoints


def _timm_train_checkpoint(path, model, ema_model):
    """What timm's train.py CheckpointSaver writes: args as an argparse.Namespace."""
    args = argparse.Namespace(
        model='test_resnet', num_classes=NUM_CLASSES, img_size=40, input_size=None, mean=None, std=None,
        interpolation='', crop_pct=None, in_chans=None, gp=None, model_kwargs={}, dataset='torch/cifar10',
        data_dir='/data/cifar', eval_metric='top1', model_ema=True, lr=0.1)
    torch.save({
        'epoch': 3, 'arch': 'test_resnet', 'state_dict': model.state_dict(),
        'state_dict_ema': ema_model.state_dict(), 'optimizer': {'state': {}, 'param_groups': []},
        'args': args, 'metric': 55.5, 'version': 2,
    }, path)


def test_export_timm_train_checkpoint_with_namespace_args(tmp_path):
    model, ema = _model(0), _model(1)
    ckpt = tmp_path / 'model_best.pth.tar'
    _timm_train_checkpoint(ckpt, model, ema)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses the Namespace
        torch.load(ckpt, weights_only=True)
    for use_ema, ref in ((False, model), (True, ema)):
        out = tmp_path / f'out-{use_ema}'
        export_checkpoint(ckpt, out, use_ema=use_ema)
        saved = load_file(str(out / 'model.safetensors'))
        assert all(torch.equal(saved[k], v) for k, v in ref.state_dict().items())
        cfg = json.loads((out / 'config.json').read_text())
        assert cfg['architecture'] == 'test_resnet' and cfg['num_classes'] == NUM_CLASSES
        assert cfg['pretrained_cfg']['input_size'] == [3, 40, 40]
        assert card_metrics(out / 'README.md') == {'top1': 55.5}
        assert ModelCard.load(out / 'README.md').data.to_dict()['datasets'] == ['cifar10']


def test_export_our_checkpoint_with_wrapper_prefixes(tmp_path):
    model = _model(2)
    sd = {('module._orig_mod.' if i % 2 else 'module.') + k: v for i, (k, v) in enumerate(model.state_dict().items())}
    ckpt = tmp_path / 'last.pth.tar'
    torch.save({'epoch': 0, 'arch': 'test_resnet', 'state_dict': sd, 'optimizer': {}, 'metric': 12.0,
                'args': {'model': 'test_resnet', 'num_classes': None, 'mile': True, 'mile_kt': 3, 'mile_ks': 2,
                         'mile_rho': 0.1, 'dataset': 'digits-grid', 'eval_metric': 'real_f1@0.25'},
                'task_state': {'phase': 'teacher'}}, ckpt)
    out = export_checkpoint(ckpt, tmp_path / 'out')
    saved = load_file(str(out / 'model.safetensors'))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['num_classes'] == NUM_CLASSES  # read off the classifier weight
    assert cfg['timm_multilabel']['method'] == {'name': 'mile', 'kt': 3, 'ks': 2, 'rho': 0.1}
    assert card_metrics(out / 'README.md') == {'real_f1@0.25': 12.0}


def test_export_bare_state_dict_needs_model_name(tmp_path):
    model = _model(3)
    path = tmp_path / 'weights.safetensors'
    save_file(model.state_dict(), str(path))
    with pytest.raises(UserError, match='pass --model NAME'):
        export_checkpoint(path, tmp_path / 'a')
    export_checkpoint(path, tmp_path / 'b', model_name='test_resnet')
    assert torch.equal(load_file(str(tmp_path / 'b' / 'model.safetensors'))['fc.bias'], model.fc.bias)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('touch PWNED',))


@pytest.mark.parametrize('kind', ['garbage', 'truncated', 'code', 'wrong-arch'])
def test_bad_checkpoint_is_named(tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f'{kind}.pth.tar'
    if kind == 'garbage':
        path.write_bytes(b'not a checkpoint at all')
    elif kind == 'truncated':
        torch.save({'arch': 'test_resnet', 'state_dict': _model().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == 'code':
        torch.save({'arch': 'test_resnet', 'state_dict': _model().state_dict(), 'x': _RunsCode()}, path)
    else:
        torch.save({'arch': 'test_efficientnet', 'state_dict': _model().state_dict()}, path)
    with pytest.raises(UserError, match=str(path).replace('.', '\\.')) as e:
        export_checkpoint(path, tmp_path / 'out')
    assert '\n' not in str(e.value)
    assert not (tmp_path / 'PWNED').exists()
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_load_checkpoint_dict_missing_file(tmp_path):
    with pytest.raises(UserError, match='no such file'):
        load_checkpoint_dict(tmp_path / 'nope.pth')


def test_templates_are_found():
    from timm_multilabel.cards import template_path
    assert template_path('model_card.md').read_text().startswith('---\n{{ card_data }}\n---')


def test_describe_method_gives_train_py_method_dict_and_reads_checkpoint_args():
    from timm_multilabel.method import describe_method
    from timm_multilabel.mile import DEFAULT_KS, DEFAULT_RHO
    from timm_multilabel.training.args import parse_args
    args, _ = parse_args(['--mile', '--mile-kt', '5', '--relabel-maps', 'acme/maps'])
    method = describe_method(args)
    assert method == {'name': 'mile+relabel', 'kt': 5, 'ks': DEFAULT_KS, 'rho': DEFAULT_RHO, 'keep_labels': False,
                      'student': 'continue', 'maps': 'acme/maps', 'fill': 0.0, 'mode': 'local'}
    assert list(method)[0] == 'name' and describe_method(vars(args)) == method
    assert describe_method(parse_args([])[0]) == describe_method(None) == {'name': 'baseline'}
    # a checkpoint's args dict: only the settings it records
    recorded = {'mile': True, 'mile_kt': 3, 'mile_rho': None}
    assert describe_method(recorded) == {'name': 'mile', 'kt': 3, 'rho': DEFAULT_RHO}
    assert describe_method({'relabel_maps': 'm', 'relabel_fill': None}) == {'name': 'relabel', 'maps': 'm'}
