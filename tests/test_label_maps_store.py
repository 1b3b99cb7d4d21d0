"""Label-map datasets: encoding, Parquet shards + card, memory-mapped random access, both shard layouts."""
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from timm_multilabel.errors import UserError
from timm_multilabel.relabel.maps import class_id_dtype, encode_maps
from timm_multilabel.relabel.store import LabelMapStore, load_label_maps
from timm_multilabel.relabel.writer import (
    LAYOUT_FIXED, LAYOUT_FLAT, list_shards, push_maps, read_map_info, write_dataset_card, write_shard,
)

DATA = os.path.join(os.path.dirname(__file__), 'data')

K, H, W = 3, 4, 5


def _maps(n, num_classes=1000, seed=0, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(n, K, H, W, generator=g) * scale).sort(dim=1, descending=True).values
    classes = torch.stack([torch.randperm(num_classes, generator=g)[:K] for _ in range(n * H * W)])
    classes = classes.reshape(n, H, W, K).permute(0, 3, 1, 2).contiguous()
    return scores, classes


def _write(folder, ids, scores, classes, dtype='float16', num_classes=1000, shard_size=4, names=None,
           layout=LAYOUT_FIXED):
    n = len(ids)
    num_shards = -(-n // shard_size)
    for s in range(num_shards):
        sl = slice(s * shard_size, (s + 1) * shard_size)
        write_shard(str(folder), s, num_shards, ids[sl], scores[sl], classes[sl], dtype, num_classes, layout)
    write_dataset_card(str(folder), dict(
        annotator='test_resnet', weights='unit test', input_size=128, map_size=(H, W), topk=K, dtype=dtype,
        num_classes=num_classes, class_names=names))
    return str(folder)


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / 'hf_cache')


@pytest.mark.parametrize('dtype, layout', [('float32', LAYOUT_FIXED), ('float16', LAYOUT_FIXED),
                                           ('uint8', LAYOUT_FIXED), ('float16', LAYOUT_FLAT), ('uint8', LAYOUT_FLAT)])
def test_round_trip(tmp_path, cache, dtype, layout):
    scores, classes = _maps(10)
    ids = [f'n{i % 3:08d}/img_{i:03d}' for i in range(10)]
    folder = _write(tmp_path / 'maps', ids, scores, classes, dtype, layout=layout)
    store = load_label_maps(folder, cache_dir=cache)
    assert isinstance(store, LabelMapStore)
    assert store.layout == layout == read_map_info(folder)['layout_version']
    assert len(store) == 10 and store.topk == K and store.map_size == (H, W) and store.num_classes == 1000
    assert store.dtype == dtype and store.info['annotator'] == 'test_resnet'
    assert store.image_ids == sorted(ids)
    for i in (0, 7, 9):
        s, c = store[ids[i]]
        assert s.dtype == torch.float32 and c.dtype == torch.int64 and s.shape == c.shape == (K, H, W)
        assert torch.equal(c, classes[i])
        if dtype == 'float32':
            assert torch.equal(s, scores[i])
        elif dtype == 'float16':
            assert torch.allclose(s, scores[i], rtol=2 ** -10, atol=1e-6)
        else:  # per-map affine uint8: error at most (max - min) / 255 / 2
            bound = float(scores[i].max() - scores[i].min()) / 255 / 2
            err = float((s - scores[i]).abs().max())
            assert err <= bound * 1.001 + 1e-6
            assert err > 0  # really quantized
            assert torch.isclose(s.max(), scores[i].max(), atol=1e-5) and torch.isclose(s.min(), scores[i].min(), atol=1e-5)


def test_uint8_quantization_by_hand():
    scores = torch.tensor([-1.0, 0.0, 1.0, 4.1]).reshape(1, 4, 1, 1)
    enc = encode_maps(scores, torch.arange(4).reshape(1, 4, 1, 1), 'uint8', 10)
    assert enc.offset[0] == np.float32(-1.0)
    assert np.isclose(enc.scale[0], 5.1 / 255)
    assert enc.scores.tolist() == [[0, 50, 100, 255]]  # (s + 1) / 0.02


def test_class_id_dtype_and_columns(tmp_path, cache):
    import pyarrow.parquet as pq
    assert class_id_dtype(10) == np.uint8 and class_id_dtype(256) == np.uint8
    assert class_id_dtype(257) == np.int16 and class_id_dtype(1000) == np.int16
    assert class_id_dtype(40000) == np.int32
    for num_classes, arrow in [(10, 'uint8'), (40000, 'int32')]:
        scores, classes = _maps(3, num_classes=num_classes)
        folder = _write(tmp_path / str(num_classes), ['a', 'b', 'c'], scores, classes, 'uint8', num_classes)
        schema = pq.read_schema(list_shards(folder)[0])
        # [K, H, W] fixed-size lists of the class-id dtype
        assert str(schema.field('classes').type) == \
            f'fixed_size_list<element: fixed_size_list<element: fixed_size_list<element: {arrow}>[{W}]>[{H}]>[{K}]'
        assert str(schema.field('scores').type.value_type.value_type.value_type) == 'uint8'
        assert {'offset', 'scale'} <= set(schema.names)
        assert torch.equal(load_label_maps(folder, cache_dir=cache)['b'][1], classes[1])


def test_load_dataset_reads_the_folder(tmp_path, cache):
    import datasets
    scores, classes = _maps(9)
    ids = [f'd/{i}' for i in range(9)]
    names = [f'class {i}' for i in range(1000)]
    folder = _write(tmp_path / 'maps', ids, scores, classes, 'float32', shard_size=4, names=names)
    assert [os.path.basename(p) for p in list_shards(folder)] == [
        'train-00000-of-00003.parquet', 'train-00001-of-00003.parquet', 'train-00002-of-00003.parquet']
    ds = datasets.load_dataset(folder, split='train', cache_dir=cache)
    assert ds.num_rows == 9 and ds['image_id'] == ids
    row = ds[4]
    assert torch.equal(torch.tensor(row['scores']), scores[4])  # nested lists [K][H][W], no reshape
    assert torch.equal(torch.tensor(row['classes']), classes[4])
    info = read_map_info(folder)
    assert info['num_images'] == 9 and info['topk'] == K and info['map_size'] == (H, W)
    assert info['class_names'] == names and info['dtype'] == 'float32'
    store = load_label_maps(folder, cache_dir=cache)
    assert store.class_names == names and store.info['weights'] == 'unit test'
    card = open(os.path.join(folder, 'README.md')).read()
    assert 'path: data/train-*.parquet' in card and 'dataset_info' in card and 'load_label_maps' in card


def test_batched_lookup_equals_per_item_and_membership(tmp_path, cache):
    scores, classes = _maps(12)
    ids = [f'x/{i:02d}' for i in range(12)][::-1]  # written unsorted: the store sorts its index
    folder = _write(tmp_path / 'maps', ids, scores, classes, 'uint8', shard_size=5)
    store = load_label_maps(folder, cache_dir=cache)
    want = ['x/03', 'x/11', 'x/00', 'x/03', 'x/07']
    bs, bc = store.get_batch(want)
    assert bs.shape == (5, K, H, W) and bc.dtype == torch.int64
    for j, i in enumerate(want):
        s, c = store[i]
        assert torch.equal(bs[j], s) and torch.equal(bc[j], c)
        assert torch.equal(c, classes[ids.index(i)])
    assert 'x/05' in store and 'x/99' not in store and 5 not in store
    assert store.missing(['x/01', 'nope', 'x/02', 'zz']) == ['nope', 'zz']
    with pytest.raises(KeyError, match='nope'):
        store['nope']
    with pytest.raises(KeyError, match='nope'):
        store.get_batch(['x/01', 'nope'])


class _MapDataset(torch.utils.data.Dataset):
    def __init__(self, store, ids):
        self.store, self.ids = store, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.store[self.ids[i]]


def test_store_in_dataloader_workers_and_pickle(tmp_path, cache):
    scores, classes = _maps(8)
    ids = [f'{i}' for i in range(8)]
    store = load_label_maps(_write(tmp_path / 'maps', ids, scores, classes, 'float16'), cache_dir=cache)
    clone = pickle.loads(pickle.dumps(store))
    assert torch.equal(clone['3'][0], store['3'][0])
    loader = torch.utils.data.DataLoader(_MapDataset(store, ids), batch_size=3, num_workers=2)
    got_s, got_c = zip(*loader)
    assert torch.equal(torch.cat(got_c), classes)
    assert torch.allclose(torch.cat(got_s), scores, rtol=2 ** -10, atol=1e-6)


@pytest.mark.slow
def test_store_in_spawned_dataloader_worker(tmp_path, cache):
    scores, classes = _maps(8)
    ids = [f'{i}' for i in range(8)]
    store = load_label_maps(_write(tmp_path / 'maps', ids, scores, classes, 'float16'), cache_dir=cache)
    ctx = torch.multiprocessing.get_context('spawn')
    loader = torch.utils.data.DataLoader(_MapDataset(store, ids), batch_size=8, num_workers=1,
                                         multiprocessing_context=ctx)
    (s, c), = list(loader)
    assert torch.equal(c, classes)


def test_corrupt_or_truncated_shard_is_named(tmp_path, cache):
    scores, classes = _maps(8)
    folder = _write(tmp_path / 'maps', [str(i) for i in range(8)], scores, classes, 'float32', shard_size=4)
    shard = list_shards(folder)[1]
    data = open(shard, 'rb').read()
    with open(shard, 'wb') as f:
        f.write(data[: len(data) // 2])  # truncated: no footer
    with pytest.raises(UserError, match='train-00001-of-00002.parquet'):
        load_label_maps(folder, cache_dir=cache)
    # footer intact, data pages garbled
    bad = bytearray(data)
    bad[8:len(data) // 2] = os.urandom(len(data) // 2 - 8)
    with open(shard, 'wb') as f:
        f.write(bytes(bad))
    with pytest.raises(UserError, match='train-00001-of-00002.parquet'):
        load_label_maps(folder, cache_dir=cache)


def test_invalid_maps_and_folders(tmp_path, cache):
    scores, classes = _maps(2)
    scores[1, 0, 2, 3] = float('nan')
    with pytest.raises(UserError, match="'b'.*NaN"):
        write_shard(str(tmp_path / 'm'), 0, 1, ['a', 'b'], scores, classes, 'float16', 1000)
    assert not list_shards(str(tmp_path / 'm'))
    scores, classes = _maps(2)
    with pytest.raises(UserError, match='float16 range'):
        write_shard(str(tmp_path / 'm'), 0, 1, ['a', 'b'], scores * 1e5, classes, 'float16', 1000)
    with pytest.raises(UserError, match=r'outside \[0, 10\)'):
        write_shard(str(tmp_path / 'm'), 0, 1, ['a', 'b'], scores, classes, 'float16', 10)
    write_shard(str(tmp_path / 'm'), 0, 1, ['a', 'b'], scores, classes, 'float16', 1000)
    assert not [n for n in os.listdir(tmp_path / 'm' / 'data') if n.startswith('.')]  # no temp file left
    with pytest.raises(UserError, match='no dataset card'):
        load_label_maps(str(tmp_path / 'm'), cache_dir=cache)
    with pytest.raises(UserError, match='no label-map dataset folder'):
        load_label_maps(str(tmp_path / 'nowhere' / 'x' / 'y'))


def test_hub_repo_id_uses_snapshot_download(tmp_path, cache, monkeypatch):
    import huggingface_hub
    scores, classes = _maps(3)
    folder = _write(tmp_path / 'maps', ['a', 'b', 'c'], scores, classes, 'float16')
    calls = []

    def fake_snapshot_download(repo_id, repo_type=None, revision=None, **kw):
        calls.append((repo_id, repo_type, revision))
        return folder

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', fake_snapshot_download)
    store = load_label_maps('someone/relabel-maps', revision='v1', cache_dir=cache)
    assert calls == [('someone/relabel-maps', 'dataset', 'v1')]
    assert torch.equal(store['c'][1], classes[2])


def test_push_without_network_is_one_line_error(tmp_path, monkeypatch):
    from huggingface_hub import constants
    scores, classes = _maps(2)
    folder = _write(tmp_path / 'maps', ['a', 'b'], scores, classes, 'float16')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(UserError) as e:
        push_maps(folder, 'someone/maps')
    assert 'someone/maps' in str(e.value) and '\n' not in str(e.value)


def test_push_uploads_card_and_shards_only(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    scores, classes = _maps(2)
    folder = _write(tmp_path / 'maps', ['a', 'b'], scores, classes, 'float16')
    (tmp_path / 'maps' / '.label_maps_run.json').write_text('{}')
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(('token', token))

        def create_repo(self, repo_id, **kw):
            calls.append(('create', repo_id, kw['repo_type'], kw['private']))

        def upload_folder(self, **kw):
            calls.append(('upload', kw['repo_id'], kw['repo_type'], sorted(kw['allow_patterns'])))
            return type('Commit', (), {'commit_url': 'https://hf.co/datasets/org/maps/commit/1'})()

    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    assert push_maps(folder, 'org/maps', private=True, token='t') == 'https://hf.co/datasets/org/maps/commit/1'
    assert calls == [('token', 't'), ('create', 'org/maps', 'dataset', True),
                     ('upload', 'org/maps', 'dataset', ['README.md', 'data/train-*.parquet'])]
    assert 'load_label_maps("org/maps")' in open(os.path.join(folder, 'README.md')).read()
    assert read_map_info(folder)['repo_id'] == 'org/maps'


# -- layouts ---------------------------------------------------------------------------------

def _oriented(n=3, num_classes=300, shape=(K, H, W)):
    """Maps whose every cell differs: top/bottom (0.5 per row y) and left/right (0.25 per column x)
    (the formula tests/data/label_maps_flat_v1.md wrote the fixtures with)."""
    k_, h_, w_ = shape
    k, y, x, i = (torch.arange(d).view(*s) for d, s in ((k_, (1, k_, 1, 1)), (h_, (1, 1, h_, 1)),
                                                        (w_, (1, 1, 1, w_)), (n, (n, 1, 1, 1))))
    scores = (4.0 + i + 0.5 * y + 0.25 * x - 3.0 * k).float()  # multiples of 1/4: exact in float16
    classes = (i + 5 * k + 3 * y + x) % num_classes
    return scores, classes


@pytest.mark.parametrize('streaming', [False, True])
def test_datasets_gives_k_h_w_tensors(tmp_path, cache, streaming):
    """A plain datasets user gets [K, H, W] tensors, row 0 = top, column 0 = left, as the maps given."""
    import datasets
    scores, classes = _oriented()
    folder = _write(tmp_path / 'maps', ['a', 'b', 'c'], scores, classes, 'float16', num_classes=300, shard_size=2)
    ds = datasets.load_dataset(folder, split='train', cache_dir=cache, streaming=streaming).with_format('torch')
    rows = list(ds)
    assert [r['image_id'] for r in rows] == ['a', 'b', 'c']
    for i, r in enumerate(rows):
        assert r['scores'].shape == r['classes'].shape == (K, H, W)
        assert torch.equal(r['scores'], scores[i]) and torch.equal(r['classes'], classes[i])
    top_left, top_right, bottom_left = rows[1]['scores'][0, 0, 0], rows[1]['scores'][0, 0, -1], rows[1]['scores'][0, -1, 0]
    assert (float(top_left), float(top_right), float(bottom_left)) == (5.0, 6.0, 6.5)
    if not streaming:
        batch = ds[0:3]
        assert batch['scores'].shape == (3, K, H, W) and torch.equal(batch['classes'], classes)
    card = open(os.path.join(folder, 'README.md')).read()
    assert 'layout_version: 2' in card and 'with_format("torch")' in card and 'reshape' not in card


@pytest.mark.parametrize('dtype, num_classes', [('float16', 10), ('uint8', 300)])
def test_flat_folders_already_published_still_read(tmp_path, cache, dtype, num_classes):
    """tests/data holds folders written by the flat-layout writer (before layout 2): same maps back."""
    folder = str(tmp_path / 'flat')
    shutil.copytree(os.path.join(DATA, f'label_maps_flat_v1_{dtype}'), folder)
    scores, classes = _oriented(5, num_classes, shape=(2, 3, 4))
    store = load_label_maps(folder, cache_dir=cache)
    assert store.layout == LAYOUT_FLAT and 'layout_version' not in open(os.path.join(folder, 'README.md')).read()
    assert (store.topk, store.map_size) == (2, (3, 4)) and store.image_ids == [f'img_{i}' for i in range(5)]
    s, c = store.get_batch(store.image_ids)
    assert torch.equal(c, classes)
    if dtype == 'float16':
        assert torch.equal(s, scores)
    else:  # uint8: within half a quantization step of each map
        step = (scores.amax((1, 2, 3)) - scores.amin((1, 2, 3))) / 255
        assert ((s - scores).abs() <= step.view(-1, 1, 1, 1) / 2 + 1e-6).all()
    assert torch.equal(store['img_2'][1], classes[2])
    # the card rewritten for a push keeps the flat layout and its features
    push_card = write_dataset_card(folder, {**read_map_info(folder), 'repo_id': 'org/old'})
    text = open(push_card).read()
    assert 'layout_version: 1' in text and 'reshape(2, 3, 4)' in text
    assert load_label_maps(folder, cache_dir=cache).get_batch(['img_4'])[1].equal(classes[4:])


def test_two_layouts_in_one_folder_are_refused(tmp_path, cache):
    scores, classes = _oriented(4)
    folder = str(tmp_path / 'mixed')
    write_shard(folder, 0, 2, ['a', 'b'], scores[:2], classes[:2], 'float16', 300, LAYOUT_FLAT)
    write_shard(folder, 1, 2, ['c', 'd'], scores[2:], classes[2:], 'float16', 300, LAYOUT_FIXED)
    with pytest.raises(UserError) as e:
        write_dataset_card(folder, dict(annotator='m', input_size=32, map_size=(H, W), topk=K, dtype='float16',
                                        num_classes=300))
    want = (r'shards in two layouts, train-00000-of-00002\.parquet in flat \[K\*H\*W\] lists \(layout 1\) and '
            r'train-00001-of-00002\.parquet in fixed-shape \[K, H, W\] arrays \(layout 2\)')
    assert re.search(want, str(e.value)) and '\n' not in str(e.value)
    # a card written before the second shard was added: the store and the pre-flight refuse the same way
    os.rename(list_shards(folder)[1], str(tmp_path / 'second.parquet'))
    write_dataset_card(folder, dict(annotator='m', input_size=32, map_size=(H, W), topk=K, dtype='float16',
                                    num_classes=300))
    os.rename(str(tmp_path / 'second.parquet'), os.path.join(folder, 'data', 'train-00001-of-00002.parquet'))
    for fn in (lambda: load_label_maps(folder, cache_dir=cache), lambda: LabelMapStore(folder, cache_dir=cache)):
        with pytest.raises(UserError) as e:
            fn()
        assert re.search(want, str(e.value)) and '\n' not in str(e.value)


def test_training_reads_flat_and_fixed_folders_alike(tmp_path):
    """train.py's LabelPooling path (build_relabel_training: store -> collate) gives the same targets
    for the same maps and crops whichever layout the folder is in."""
    import argparse
    import random
    from timm_multilabel.data.digits_grid import DigitsGrid
    from timm_multilabel.data.digits_maps import oracle_maps
    from timm_multilabel.relabel.writer import write_maps_folder
    from timm_multilabel.training.relabel import build_relabel_training
    transform = dict(input_size=(3, 24, 24), scale=(0.3, 1.0), ratio=(0.75, 1.33), hflip=0.5, interpolation='bilinear',
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    ds = DigitsGrid('train', num_samples=16, seed=3)
    scores, classes = oracle_maps(ds)
    info = dict(annotator='oracle', input_size=48, map_size=tuple(scores.shape[-2:]), topk=scores.shape[1],
                dtype='float16', num_classes=10)
    targets = []
    for layout in (LAYOUT_FLAT, LAYOUT_FIXED):
        folder = write_maps_folder(tmp_path / f'layout{layout}', ds.image_ids, [(scores, classes)], info,
                                   shard_size=6, layout=layout)
        args = argparse.Namespace(relabel_maps=str(folder), relabel_fill=0.0, relabel_mode='local')
        boxed, collate = build_relabel_training(args, DigitsGrid('train', num_samples=16, seed=3), dict(transform), 10)
        torch.manual_seed(0)
        random.seed(0)
        targets.append(collate([boxed[i] for i in range(16)])[1])
    assert targets[0].shape == (16, 10) and torch.allclose(targets[0].sum(1), torch.ones(16))
    assert torch.equal(targets[0], targets[1])
    assert (targets[0].amax(1) < 0.99).any()  # real crops of several digits, not one-hot targets
