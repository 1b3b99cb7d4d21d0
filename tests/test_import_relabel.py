"""`timm-multilabel import-relabel`: official ReLabel .pt maps -> label-map dataset."""
import os
import pickle

import pytest
import torch

from timm_multilabel.cli import main
from timm_multilabel.relabel.store import load_label_maps

K, H, W = 5, 3, 4


def _official(n, seed=0, dtype=torch.float32):
    """Maps in the official layout: [2, K, H, W] float, scores then class ids as floats."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        scores = (torch.randn(K, H, W, generator=g) * 5).sort(0, descending=True).values
        classes = torch.stack([torch.randperm(1000, generator=g)[:K] for _ in range(H * W)], 1).reshape(K, H, W)
        out.append(torch.stack([scores, classes.float()]).to(dtype))
    return out


def _src(root, maps):
    names = []
    for i, m in enumerate(maps):
        wnid = ['n01440764', 'n02102040'][i % 2]
        path = root / wnid / f'{wnid}_{100 + i}.pt'
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(m, path)
        names.append(f'{wnid}/{wnid}_{100 + i}')
    return names


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path / 'hf_cache'))


def _run(src, out, *extra):
    return main(['import-relabel', '--src', str(src), '--output', str(out), '--workers', '0', '--shard-size', '3',
                 *extra])


def test_round_trip(tmp_path):
    maps = _official(7)
    ids = _src(tmp_path / 'src', maps)
    out = tmp_path / 'maps'
    assert _run(tmp_path / 'src', out, '--dtype', 'float32') == 0
    store = load_label_maps(str(out), cache_dir=str(tmp_path / 'c'))
    assert store.image_ids == sorted(ids) and store.topk == K and store.map_size == (H, W)
    assert store.info['input_size'] == 475 and 'EfficientNet-L2' in store.info['annotator']
    assert store.class_names[0].startswith('tench')
    for i, m in zip(ids, maps):
        s, c = store[i]
        assert torch.equal(s, m[0]) and torch.equal(c, m[1].long())
    assert sorted(os.listdir(out / 'data')) == ['train-00000-of-00003.parquet', 'train-00001-of-00003.parquet',
                                               'train-00002-of-00003.parquet']
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.tmp')]


def test_float16_source_and_storage(tmp_path):
    maps = _official(4, dtype=torch.float16)
    ids = _src(tmp_path / 'src', maps)
    assert _run(tmp_path / 'src', tmp_path / 'maps', '--dtype', 'uint8') == 0
    store = load_label_maps(str(tmp_path / 'maps'), cache_dir=str(tmp_path / 'c'))
    for i, m in zip(ids, maps):
        s, c = store[i]
        bound = float(m[0].float().max() - m[0].float().min()) / 255 / 2
        assert torch.equal(c, m[1].long()) and float((s - m[0].float()).abs().max()) <= bound + 1e-5


def _refused(tmp_path, capsys, bad_name):
    out = tmp_path / 'maps'
    assert _run(tmp_path / 'src', out) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if 'error:' in ln]
    assert len(err) == 1 and bad_name in err[0], err
    assert not out.exists()  # nothing half-written
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.tmp')]
    return err[0]


@pytest.mark.parametrize('bad, why', [
    (torch.zeros(K, H, W), 'shape [5, 3, 4]'),
    (torch.zeros(3, K, H, W), 'shape [3, 5, 3, 4]'),
    (torch.zeros(2, K, H, W, dtype=torch.int64), 'dtype torch.int64'),
    (torch.zeros(2, K + 1, H, W), 'the other maps are [2, 5, 3, 4]'),
    ({'scores': torch.zeros(K, H, W)}, 'holds a dict'),
])
def test_wrong_files_are_named(tmp_path, capsys, bad, why):
    _src(tmp_path / 'src', _official(5))
    torch.save(bad, tmp_path / 'src' / 'n02102040' / 'n02102040_999.pt')
    assert why in _refused(tmp_path, capsys, 'n02102040_999.pt')


def test_bad_values_are_named(tmp_path, capsys):
    maps = _official(4)
    maps[2][1, 0, 0, 0] = 1000.0  # class id out of range
    _src(tmp_path / 'src', maps)
    assert 'outside [0, 1000)' in _refused(tmp_path, capsys, 'n01440764_102.pt')
    maps[2][1, 0, 0, 0] = 3.5
    _src(tmp_path / 'src', maps)
    assert 'non-integer class ids' in _refused(tmp_path, capsys, 'n01440764_102.pt')
    maps[2][1, 0, 0, 0] = 3
    maps[3][0, 1, 1, 1] = float('inf')
    _src(tmp_path / 'src', maps)
    assert 'NaN or inf' in _refused(tmp_path, capsys, 'n02102040_103.pt')


def test_malicious_pickle_is_refused_without_running(tmp_path, capsys):
    _src(tmp_path / 'src', _official(3))
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    (tmp_path / 'src' / 'n01440764' / 'n01440764_evil.pt').write_bytes(pickle.dumps(Evil(), protocol=2))
    assert 'weights_only=True' in _refused(tmp_path, capsys, 'n01440764_evil.pt')
    assert not marker.exists()


def test_existing_output(tmp_path, capsys):
    _src(tmp_path / 'src', _official(4))
    out = tmp_path / 'maps'
    assert _run(tmp_path / 'src', out) == 0
    assert _run(tmp_path / 'src', out) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert _run(tmp_path / 'src', out, '--overwrite', '--shard-size', '10') == 0
    assert sorted(os.listdir(out / 'data')) == ['train-00000-of-00001.parquet']
    assert len(load_label_maps(str(out), cache_dir=str(tmp_path / 'c'))) == 4
    (tmp_path / 'empty').mkdir()
    assert _run(tmp_path / 'empty', tmp_path / 'o2') == 2
    assert 'no .pt label maps' in capsys.readouterr().err
