"""`timm-multilabel export`, `eval` and `push-maps`: argument handling, one-line errors, numbers checked
against a hand-made evaluation."""
import json

import numpy as np
import pytest
import torch

timm = pytest.importorskip('timm')
from PIL import Image  # noqa: E402

from timm_multilabel import cli  # noqa: E402
from timm_multilabel.data import DigitsGrid  # noqa: E402
from timm_multilabel.hub import card_metrics, save_model_folder  # noqa: E402

DATA_CONFIG = dict(input_size=(3, 48, 48), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0,
                   interpolation='bilinear')
SUMMARY_METRICS = {'top1': 61.5, 'real_acc': 90.25, 'real_f1@0.25': 70.125, 'real_f1@0.5': 65.0,
                   'label_coverage@0.25': 2.5, 'mAP': None}


def _digits_model(seed=0):
    torch.manual_seed(seed)
    return timm.create_model('test_resnet', num_classes=10).eval()


def _run_folder(tmp_path, model):
    """What train.py leaves in --output: a checkpoint (args as a dict) and summary.json."""
    run = tmp_path / 'run'
    run.mkdir()
    args = {'model': 'test_resnet', 'num_classes': 10, 'dataset': 'digits-grid', 'input_size': [3, 48, 48],
            'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'crop_pct': 1.0, 'interpolation': 'bilinear',
            'mile': True, 'mile_kt': 4, 'mile_ks': 2, 'mile_rho': 0.1, 'eval_metric': 'top1'}
    torch.save({'epoch': 1, 'arch': 'test_resnet', 'state_dict': model.state_dict(), 'optimizer': {},
                'args': args, 'metric': 61.5}, run / 'model_best.pth.tar')
    (run / 'summary.json').write_text(json.dumps({'metrics': SUMMARY_METRICS, 'args': args, 'world_size': 1}))
    return run


def test_export_run_folder_card_reports_summary_numbers(tmp_path, capsys):
    model = _digits_model()
    run = _run_folder(tmp_path, model)
    out = tmp_path / 'hf'
    assert cli.main(['export', str(run), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert card_metrics(out / 'README.md') == {k: v for k, v in SUMMARY_METRICS.items() if v is not None}
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['timm_multilabel']['method'] == {'name': 'mile', 'kt': 4, 'ks': 2, 'rho': 0.1}
    assert cfg['pretrained_cfg']['input_size'] == [3, 48, 48]


def test_export_label_names_file(tmp_path):
    run = _run_folder(tmp_path, _digits_model())
    names = tmp_path / 'names.txt'
    names.write_text('\n'.join(f'digit-{i}' for i in range(10)) + '\n')
    out = tmp_path / 'hf'
    assert cli.main(['export', str(run / 'model_best.pth.tar'), str(out), '--label-names', str(names)]) == 0
    assert json.loads((out / 'config.json').read_text())['label_names'][9] == 'digit-9'


@pytest.mark.parametrize('case', ['corrupt', 'missing', 'few-names'])
def test_export_errors_are_one_line(tmp_path, capsys, case):
    ckpt = tmp_path / 'ckpt.pth.tar'
    extra = []
    if case == 'corrupt':
        ckpt.write_bytes(b'\x00garbage')
    elif case == 'few-names':
        torch.save({'arch': 'test_resnet', 'state_dict': _digits_model().state_dict()}, ckpt)
        (tmp_path / 'names.json').write_text('["a", "b"]')
        extra = ['--label-names', str(tmp_path / 'names.json')]
    out = tmp_path / 'hf'
    assert cli.main(['export', str(ckpt), str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('timm-multilabel export: error:')
    assert (str(ckpt) in err) if case != 'few-names' else ('label_names has 2 names for 10 classes' in err)
    assert not out.exists() or not any(out.iterdir())


def test_push_maps_arguments_and_call(tmp_path, monkeypatch, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(['push-maps', 'maps_dir', 'acme/maps', '--private'])
    assert (args.folder, args.repo_id, args.private) == ('maps_dir', 'acme/maps', True)
    assert parser.parse_args(['push-maps', 'd', 'acme/maps']).private is False

    calls = []
    from timm_multilabel.cli import push_maps
    monkeypatch.setattr(push_maps, 'push_maps', lambda *a, **k: calls.append((a, k)) or 'https://x/commit/1')
    (tmp_path / 'maps').mkdir()
    assert cli.main(['push-maps', str(tmp_path / 'maps'), 'acme/maps', '--private']) == 0
    assert calls == [((str(tmp_path / 'maps'), 'acme/maps'), {'private': True})]
    assert cli.main(['push-maps', str(tmp_path / 'none'), 'acme/maps']) == 2
    assert 'is not a folder' in capsys.readouterr().err


def test_push_maps_uses_the_label_map_writer():
    from timm_multilabel.cli import push_maps
    fn = push_maps.push_maps
    assert fn.__name__ == 'push_maps' and fn.__module__.startswith('timm_multilabel.relabel')


def _hand_eval(model, n):
    """Logits of DigitsGrid(test, seed 42 = train.py's default) preprocessed by hand: 48x48 already, so
    only scale + normalize."""
    ds = DigitsGrid(split='test', num_samples=n, seed=42)
    x = torch.stack([torch.from_numpy(np.asarray(ds[i][0], dtype=np.float32) / 255.0).permute(2, 0, 1)
                     for i in range(n)])
    with torch.no_grad():
        logits = model((x - 0.5) / 0.5)
    labels = torch.as_tensor(ds.labels)
    top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    real_acc = 100.0 * np.mean([int(logits[i].argmax()) in ds.real_labels[i] for i in range(n)])
    return top1, real_acc


@pytest.mark.slow
def test_eval_folder_and_checkpoint_agree_with_hand_computation(tmp_path, capsys):
    torch.manual_seed(0)
    model = _digits_model(3)
    folder = tmp_path / 'hf'
    save_model_folder(model, folder, model_name='test_resnet', num_classes=10, data_config=DATA_CONFIG,
                      method={'name': 'mile', 'kt': 1, 'ks': 1, 'rho': 0.1}, dataset='digits-grid')
    n = 40
    top1, real_acc = _hand_eval(model, n)
    results = {}
    run = _run_folder(tmp_path, model)
    for key, spec in (('local-dir', f'local-dir:{folder}'), ('plain-dir', str(folder)),
                      ('checkpoint', str(run / 'model_best.pth.tar'))):
        out = tmp_path / f'{key}.json'
        assert cli.main(['eval', spec, '--dataset', 'digits-grid', '--num-samples', str(n), '--workers', '0',
                         '--json', str(out)]) == 0, capsys.readouterr().err
        results[key] = json.loads(out.read_text())
    for key, res in results.items():
        assert res['eval_samples'] == n and res['probs'] == 'sigmoid', key  # MILe models read with a sigmoid
        assert res['metrics']['top1'] == pytest.approx(top1, abs=1e-6), key
        assert res['metrics']['real_acc'] == pytest.approx(real_acc, abs=1e-6), key
        assert res['metrics'] == results['local-dir']['metrics']
    printed = capsys.readouterr().out
    assert 'Top-1 accuracy' in printed and 'ReaL F1 @ 0.25' in printed
    # --softmax overrides what the folder records
    out = tmp_path / 'softmax.json'
    assert cli.main(['eval', str(folder), '--dataset', 'digits-grid', '--num-samples', str(n), '--workers', '0',
                     '--softmax', '--json', str(out)]) == 0
    assert json.loads(out.read_text())['probs'] == 'softmax'


def test_eval_real_labels_are_matched_by_file_name(tmp_path):
    from timm_multilabel.evaluation import build_eval_data
    # class folders put the validation images out of index order
    files = {'a_class': ['ILSVRC2012_val_00000003.JPEG', 'ILSVRC2012_val_00000001.JPEG'],
             'b_class': ['ILSVRC2012_val_00000002.JPEG', 'ILSVRC2012_val_00000004.JPEG']}
    for cls, names in files.items():
        (tmp_path / 'val' / cls).mkdir(parents=True)
        for name in names:
            Image.new('RGB', (20, 20), (10, 20, 30)).save(tmp_path / 'val' / cls / name, format='JPEG')
    real = [[0], [1, 2], [], [3]]  # entry i: ILSVRC2012_val_{i+1:08d}
    (tmp_path / 'real.json').write_text(json.dumps(real))
    parser = cli.build_parser()
    args = parser.parse_args(['eval', 'test_resnet', '--data-dir', str(tmp_path), '--real-labels',
                              str(tmp_path / 'real.json'), '--img-size', '32'])
    model = timm.create_model('test_resnet', num_classes=4).eval()
    dataset, real_labels, data_config = build_eval_data(model, args.dataset or '', args.data_dir,
                                                        real_labels=args.real_labels, img_size=args.img_size)
    order = [str(dataset.filename(i)).split('/')[-1] for i in range(len(dataset))]
    expected = {name: real[int(name[-13:-5]) - 1] for name in order}
    assert real_labels == [expected[name] for name in order]
    assert data_config['input_size'] == (3, 32, 32)


@pytest.mark.parametrize('argv, message', [
    (['eval', 'test_resnet'], 'give --dataset digits-grid, or --data-dir'),
    (['eval', 'test_resnet', '--data-dir', '/no/such/dir'], '--data-dir /no/such/dir: no such directory'),
    (['eval', 'org/model', '--dataset', 'digits-grid'], "Use 'hf-hub:org/model'"),
    (['eval', 'test_resnet', '--dataset', 'digits-grid', '--batch-size', '0'], '--batch-size must be >= 1'),
])
def test_eval_refuses_bad_arguments(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
