"""verify_label_maps: the whole label-map dataset checked before training, one line per problem, cached."""
import argparse
import os
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from timm_multilabel.errors import UserError
from timm_multilabel.relabel import verify as verify_mod
from timm_multilabel.relabel.store import load_label_maps
from timm_multilabel.relabel.verify import verify_label_maps, verified_cache_paths
from timm_multilabel.relabel.writer import (
    LAYOUT_FIXED, LAYOUT_FLAT, VERIFIED_FILE, list_shards, map_schema, shard_name, write_dataset_card, write_maps_folder, write_table_atomic,
)

K, H, W = 2, 3, 3
NUMEL = K * H * W


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The fallback cache in the test's folder, never the real ~/.cache."""
    path = tmp_path / 'user_cache'
    monkeypatch.setenv('TIMM_MULTILABEL_CACHE', str(path))
    return path


def _rows(n, seed=0, num_classes=10):
    rng = np.random.default_rng(seed)
    scores = -np.sort(-rng.normal(size=(n, K, H, W)).astype(np.float32), axis=1)
    classes = np.stack([np.stack([rng.permutation(num_classes)[:K] for _ in range(H * W)]) for _ in range(n)])
    classes = classes.reshape(n, H, W, K).transpose(0, 3, 1, 2)
    return scores.reshape(n, NUMEL), np.ascontiguousarray(classes).reshape(n, NUMEL)


def _fixed_column(rows, value_type, shape=(K, H, W)):
    """[K, H, W] fixed-size lists of flat rows (None: a null row)."""
    numel = int(np.prod(shape))
    values = np.concatenate([np.zeros(numel) if r is None else np.asarray(r) for r in rows] or [np.zeros(0)])
    arr = pa.array(values.astype(value_type.to_pandas_dtype()), value_type)
    for i, d in enumerate(reversed(shape)):
        mask = pa.array([r is None for r in rows]) if i == len(shape) - 1 else None
        arr = pa.FixedSizeListArray.from_arrays(arr, d, mask=mask)
    return arr


def _shard(folder, index, num_shards, ids, scores, classes, dtype='float16', num_classes=10, offset=None, scale=None,
           layout=LAYOUT_FLAT, shape=(K, H, W)):
    """A shard written as given, bypassing the writer's checks (rows: lists or 2-D arrays)."""
    schema = map_schema(dtype, num_classes, layout, shape)
    if layout == LAYOUT_FLAT:
        maps = [pa.array([None if r is None else np.asarray(r) for r in scores], schema.field('scores').type),
                pa.array([None if r is None else np.asarray(r) for r in classes], schema.field('classes').type)]
    else:
        maps = [_fixed_column(scores, pa.from_numpy_dtype(np.dtype(dtype)), shape),
                _fixed_column(classes, schema.field('classes').type.value_type.value_type.value_type, shape)]
    cols = [pa.array(ids, pa.string())] + maps
    if dtype == 'uint8':
        n = len(ids)
        cols += [pa.array(np.zeros(n, np.float32) if offset is None else offset, pa.float32()),
                 pa.array(np.full(n, 0.01, np.float32) if scale is None else scale, pa.float32())]
    path = os.path.join(str(folder), shard_name(index, num_shards))
    write_table_atomic(pa.Table.from_arrays(cols, schema=schema), path)
    return path


def _card(folder, dtype='float16', num_classes=10, map_size=(H, W), **extra):
    if map_size is None:  # the shards' own shape
        t = pq.read_schema(list_shards(str(folder))[0]).field('scores').type.value_type
        map_size = (t.list_size, t.value_type.list_size)
    write_dataset_card(str(folder), dict(annotator='test', input_size=32, map_size=map_size, topk=K, dtype=dtype,
                                         num_classes=num_classes, **extra))


def _folder(tmp_path, name='maps', n=6, dtype='float16', num_classes=10, edit=None, shards=2, layout=LAYOUT_FLAT,
            **kw):
    """A folder of ``n`` maps in ``shards`` shards in ``layout``; ``edit(scores, classes, ids)`` changes
    rows before writing."""
    folder = tmp_path / name
    scores, classes = _rows(n, num_classes=num_classes)
    scores = scores.astype(np.uint8 if dtype == 'uint8' else dtype) if dtype != 'uint8' else \
        np.clip(np.rint((scores + 4) * 30), 0, 255).astype(np.uint8)
    classes = classes.astype(np.uint8 if num_classes <= 256 else np.int16)
    ids = [f'img/{i:03d}' for i in range(n)]
    scores, classes = list(scores), list(classes)
    if edit:
        edit(scores, classes, ids)
    per = -(-n // shards)
    for s in range(shards):
        sl = slice(s * per, (s + 1) * per)
        _shard(folder, s, shards, ids[sl], scores[sl], classes[sl], dtype, num_classes,
               layout=layout, **{k: v[sl] for k, v in kw.items()})
    _card(folder, dtype, num_classes)
    return folder


def _edit_card(folder, **changes):
    path = os.path.join(str(folder), 'README.md')
    text = open(path, encoding='utf-8').read()
    _, header, body = text.split('---\n', 2)
    data = yaml.safe_load(header)
    for key, value in changes.items():
        if value is _DELETE:
            data['label_maps'].pop(key)
        else:
            data['label_maps'][key] = value
    with open(path, 'w', encoding='utf-8') as f:
        f.write('---\n' + yaml.safe_dump(data, sort_keys=False) + '---\n' + body)


_DELETE = object()


def _refused(folder, match, num_classes=None):
    with pytest.raises(UserError) as e:
        verify_label_maps(str(folder), num_classes=num_classes, progress=False)
    msg = str(e.value)
    assert '\n' not in msg, msg
    assert re.search(match, msg), msg
    return msg


# -- good maps --------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype,layout', [('float16', LAYOUT_FLAT), ('float32', LAYOUT_FLAT), ('uint8', LAYOUT_FLAT),
                                          ('float16', LAYOUT_FIXED), ('uint8', LAYOUT_FIXED)])
def test_good_maps_pass_and_are_remembered(tmp_path, dtype, layout):
    folder = _folder(tmp_path, dtype=dtype, layout=layout)
    assert f'layout_version: {layout}' in (folder / 'README.md').read_text()
    out = verify_label_maps(str(folder), num_classes=10, progress=False)
    assert out == {'num_images': 6, 'num_shards': 2, 'cached': False}
    assert verify_label_maps(str(folder), num_classes=10, progress=False)['cached']
    assert (folder / VERIFIED_FILE).is_file()
    # a model with more classes than the maps is fine
    assert not verify_label_maps(str(folder), num_classes=12, progress=False)['cached']


def test_written_by_the_package_passes(tmp_path):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, K, H, W, generator=g).sort(1, descending=True).values
    classes = torch.randint(0, 1000, (5, K, H, W), generator=g)
    info = dict(annotator='t', input_size=32, map_size=(H, W), topk=K, dtype='uint8', num_classes=1000)
    folder = write_maps_folder(tmp_path / 'm', [f'{i}' for i in range(5)], [(scores, classes)], info, shard_size=2)
    assert verify_label_maps(str(folder), num_classes=1000, progress=False)['num_images'] == 5


# -- each bad case, in one line ---------------------------------------------------------------

def _set(col, row, index, value):
    def edit(scores, classes, ids):
        target = scores if col == 'scores' else classes
        target[row] = target[row].copy()
        target[row][index] = value
    return edit


@pytest.mark.parametrize('dtype,value,layout', [('float16', np.nan, LAYOUT_FLAT), ('float16', np.inf, LAYOUT_FLAT),
                                                ('float32', -np.inf, LAYOUT_FLAT), ('float32', np.nan, LAYOUT_FLAT),
                                                ('float16', np.inf, LAYOUT_FIXED)])
def test_nan_or_inf_scores(tmp_path, dtype, value, layout):
    folder = _folder(tmp_path, dtype=dtype, edit=_set('scores', 4, 7, value), layout=layout)
    _refused(folder, r"train-00001-of-00002\.parquet: image 'img/004' \(row 1\) has NaN or inf scores")


@pytest.mark.parametrize('offset,scale,what', [
    (np.nan, 0.01, 'decode to NaN or inf'), (0.0, np.inf, 'decode to NaN or inf'),
    (3e38, 1e37, 'decode to NaN or inf'), (0.0, -0.5, 'negative uint8 scale')])
def test_uint8_offset_and_scale(tmp_path, offset, scale, what):
    off, sc = np.zeros(6, np.float32), np.full(6, 0.01, np.float32)
    off[2], sc[2] = offset, scale
    folder = _folder(tmp_path, dtype='uint8', offset=off, scale=sc)
    _refused(folder, rf"train-00000-of-00002\.parquet: image 'img/002' .*{what}")


@pytest.mark.parametrize('layout', [LAYOUT_FLAT, LAYOUT_FIXED])
def test_class_ids_outside_the_cards_classes(tmp_path, layout):
    folder = _folder(tmp_path, edit=_set('classes', 3, 5, 200), layout=layout)  # uint8 storage, 10 classes
    _refused(folder, r"train-00001-of-00002\.parquet: image 'img/003' \(row 0\) has class id 200, outside \[0, 10\)")


def test_negative_class_ids(tmp_path):
    folder = _folder(tmp_path, num_classes=1000, edit=_set('classes', 0, 0, -3))  # int16 storage
    _refused(folder, r"image 'img/000' .*class id -3, outside \[0, 1000\)")


def test_more_classes_than_the_model(tmp_path):
    folder = _folder(tmp_path, num_classes=1000)
    _refused(folder, r'1000 classes .* the model has 10', num_classes=10)


@pytest.mark.parametrize('length', [NUMEL - 1, NUMEL + 1, 0])
def test_rows_of_the_wrong_length(tmp_path, length):
    def edit(scores, classes, ids):
        scores[5] = np.resize(scores[5], length)
    folder = _folder(tmp_path, edit=edit)
    _refused(folder, rf"image 'img/005' .*has {length} scores, not K\*H\*W = 2\*3\*3 = 18")


def test_fixed_layout_of_the_wrong_shape_is_one_line(tmp_path):
    """Layout 2 holds its shape in the Arrow type: maps of another shape than the card's are refused
    from the footer, in one line, by the pre-flight and by the store."""
    folder = tmp_path / 'wide'
    scores, classes = _rows(3)
    wide = np.concatenate([scores.reshape(3, K, H, W), scores.reshape(3, K, H, W)[..., :1]], -1).reshape(3, -1)
    cls = np.concatenate([classes.reshape(3, K, H, W), classes.reshape(3, K, H, W)[..., :1]], -1).reshape(3, -1)
    _shard(folder, 0, 1, ['a', 'b', 'c'], wide.astype(np.float16), cls.astype(np.uint8), layout=LAYOUT_FIXED,
           shape=(K, H, W + 1))
    with pytest.raises(UserError, match=r'train-00000-of-00001\.parquet holds \[2, 3, 4\] maps, the card'):
        _card(folder)  # the writer of the card refuses it too
    _card(folder, map_size=None)  # write it for (K, H, W + 1), then claim (K, H, W)
    _edit_card(folder, map_size=[H, W])
    msg = _refused(folder, r"train-00000-of-00001\.parquet: maps of shape \[2, 3, 4\], the card's topk and map_size "
                           r"say \[K, H, W\] = \[2, 3, 3\]$")
    with pytest.raises(UserError) as e:
        load_label_maps(str(folder), verify=False, cache_dir=str(tmp_path / 'hf'))
    assert str(e.value) == msg


def test_fixed_layout_nulls_inside_a_map(tmp_path):
    folder = _folder(tmp_path, layout=LAYOUT_FIXED)
    path = list_shards(str(folder))[1]
    table = pq.read_table(path)
    scores = table.column('scores').combine_chunks()
    cells = scores.flatten()  # [H, W] lists, K per map: null the second one of map 1 (img/004)
    mask = np.zeros(len(cells), bool)
    mask[K + 1] = True
    inner = pa.FixedSizeListArray.from_arrays(cells.flatten(), H, mask=pa.array(mask))
    bad = pa.FixedSizeListArray.from_arrays(inner, K)
    write_table_atomic(table.set_column(1, 'scores', bad), path)
    _refused(folder, r"train-00001-of-00002\.parquet: image 'img/004' \(row 1\) has null scores values")
    with pytest.raises(UserError, match="scores of image 'img/004'"):
        load_label_maps(str(folder), verify=False, cache_dir=str(tmp_path / 'hf'))['img/003']


def test_card_and_shards_in_different_layouts(tmp_path):
    folder = _folder(tmp_path, layout=LAYOUT_FIXED)
    _edit_card(folder, layout_version=_DELETE)  # a card as the flat-layout writer wrote them
    _refused(folder, r'train-00000-of-00002\.parquet is in fixed-shape \[K, H, W\] arrays \(layout 2\), the card says '
                     r'flat \[K\*H\*W\] lists \(layout 1\)')
    _edit_card(folder, layout_version=3)
    _refused(folder, r'label_maps\.layout_version is 3, expected 1 \(flat lists\) or 2')


def test_rows_that_only_add_up(tmp_path):
    # one row short, the next long: the total is right, the old store accepted it
    def edit(scores, classes, ids):
        classes[1], classes[2] = classes[1][:-1], np.concatenate([classes[2], classes[2][:1]])
    folder = _folder(tmp_path, edit=edit)
    _refused(folder, r"image 'img/001' .*has 17 classes, not K\*H\*W")
    with pytest.raises(UserError, match="classes of image 'img/001'"):
        load_label_maps(str(folder), verify=False, cache_dir=str(tmp_path / 'hf'))['img/000']


def test_null_rows_and_ids(tmp_path):
    def no_scores(scores, classes, ids):
        scores[1] = None
    _refused(_folder(tmp_path, 'a', edit=no_scores), r"image 'img/001' .*has no scores \(null\)")
    _refused(_folder(tmp_path, 'a2', edit=no_scores, layout=LAYOUT_FIXED), r"image 'img/001' .*has no scores \(null\)")

    def no_id(scores, classes, ids):
        ids[4] = None
    _refused(_folder(tmp_path, 'b', edit=no_id), r'train-00001-of-00002\.parquet: row 1 has no image_id')


def test_duplicate_image_ids(tmp_path):
    def dup(scores, classes, ids):
        ids[4] = ids[1]
    msg = _refused(_folder(tmp_path, edit=dup), r"image id 'img/001' appears twice")
    assert 'train-00000-of-00002.parquet and' in msg and 'train-00001-of-00002.parquet' in msg


def test_shards_without_maps(tmp_path):
    folder = tmp_path / 'empty'
    _shard(folder, 0, 1, [], [], [])
    _card(folder)
    _refused(folder, 'the shards hold no maps')


def test_card_count_differs_from_the_shards(tmp_path):
    folder = _folder(tmp_path)
    _edit_card(folder, num_images=7)
    _refused(folder, 'the card lists 7 images, the shards hold 6')


@pytest.mark.parametrize('key,value,match', [
    ('topk', 'three', r"label_maps\.topk is 'three', expected a positive integer"),
    ('topk', 2.0, r'label_maps\.topk is 2\.0'),
    ('map_size', 4, r'label_maps\.map_size is 4, expected \[H, W\]'),
    ('map_size', [3, 'x'], r'label_maps\.map_size'),
    ('num_classes', -1, r'label_maps\.num_classes is -1'),
    ('num_classes', True, r'label_maps\.num_classes is True'),
    ('input_size', None, 'label_maps lacks input_size'),
    ('annotator', 5, r'label_maps\.annotator is 5, expected a model name'),
    ('dtype', 'bfloat16', r"label_maps\.dtype is 'bfloat16', expected one of float16, float32, uint8"),
    ('class_names', ['a', 'b'], 'class_names has 2 names for 10 classes'),
    ('class_names', 'abc', 'class_names must be a list of strings'),
    ('num_images', 'many', r'label_maps\.num_images'),
    ('topk', _DELETE, 'label_maps lacks topk'),
])
def test_card_fields_of_the_wrong_type(tmp_path, key, value, match):
    folder = _folder(tmp_path)
    _edit_card(folder, **{key: value})
    msg = _refused(folder, match)
    assert 'README.md' in msg
    with pytest.raises(UserError, match=match):  # the store reads the same card
        load_label_maps(str(folder), verify=False)


def test_garbage_card(tmp_path):
    folder = _folder(tmp_path)
    (folder / 'README.md').write_text('---\nlabel_maps: [unclosed\n  : :\n---\n')
    _refused(folder, r'cannot read the dataset card .*README\.md')
    (folder / 'README.md').write_text('---\n- just\n- a list\n---\n')
    _refused(folder, 'README.md')
    (folder / 'README.md').write_bytes(b'---\n\xff\xfe\x00garbage\n---\n')
    _refused(folder, 'README.md')


def test_wrong_column_type_and_corrupt_shard(tmp_path):
    folder = _folder(tmp_path)
    path = list_shards(str(folder))[0]
    table = pa.table({'image_id': ['x'], 'scores': pa.array([np.zeros(NUMEL)], pa.list_(pa.float64())),
                      'classes': pa.array([np.zeros(NUMEL, np.uint8)], pa.list_(pa.uint8()))})
    write_table_atomic(table, path)
    _refused(folder, r"train-00000-of-00002\.parquet: column 'scores' is list<\w+: double>, the card")
    folder = _folder(tmp_path, 'b')
    path = list_shards(str(folder))[1]
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[: len(data) // 2])
    _refused(folder, r'corrupt label-map shard .*train-00001-of-00002\.parquet')


# -- caching --------------------------------------------------------------------------------

class _CountReads:
    def __init__(self, monkeypatch):
        self.paths = []
        real = verify_mod._read_shard

        def reader(path, info):
            self.paths.append(os.path.basename(path))
            return real(path, info)
        monkeypatch.setattr(verify_mod, '_read_shard', reader)


def test_second_call_does_not_rescan_and_a_touched_shard_does(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    reads = _CountReads(monkeypatch)
    verify_label_maps(str(folder), num_classes=10, progress=False)
    assert len(reads.paths) == 2
    assert verify_label_maps(str(folder), num_classes=10, progress=False)['cached']
    assert load_label_maps(str(folder), num_classes=10, cache_dir=str(tmp_path / 'hf')).num_classes == 10
    assert len(reads.paths) == 2  # nothing read again
    shard = list_shards(str(folder))[1]
    st = os.stat(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not verify_label_maps(str(folder), num_classes=10, progress=False)['cached']
    assert len(reads.paths) == 4
    # another model's class count is its own entry; both stay remembered
    verify_label_maps(str(folder), num_classes=20, progress=False)
    assert len(reads.paths) == 6
    assert verify_label_maps(str(folder), num_classes=10, progress=False)['cached']
    assert verify_label_maps(str(folder), num_classes=20, progress=False)['cached']


def test_a_replaced_bad_shard_is_caught_after_a_pass(tmp_path):
    folder = _folder(tmp_path)
    verify_label_maps(str(folder), progress=False)
    scores, classes = _rows(3)
    scores[1, 0] = np.nan
    _shard(folder, 1, 2, ['img/003', 'img/004', 'img/005'], scores.astype(np.float16), classes.astype(np.uint8))
    _refused(folder, "image 'img/004' .*NaN")


def test_read_only_folder_caches_elsewhere_and_never_fails(tmp_path, monkeypatch, user_cache):
    folder = _folder(tmp_path)
    real_access = os.access
    monkeypatch.setattr(verify_mod.os, 'access',
                        lambda p, mode: False if str(p) == str(folder) else real_access(p, mode))
    assert verified_cache_paths(str(folder))[0].startswith(str(user_cache))
    verify_label_maps(str(folder), progress=False)
    assert not (folder / VERIFIED_FILE).exists() and len(list(user_cache.rglob('*.json'))) == 1
    reads = _CountReads(monkeypatch)
    assert verify_label_maps(str(folder), progress=False)['cached'] and not reads.paths
    # nowhere to write: still verifies, just not remembered
    monkeypatch.setattr(verify_mod, 'write_json', lambda *a, **k: (_ for _ in ()).throw(OSError('read-only')))
    folder2 = _folder(tmp_path, 'other')
    assert not verify_label_maps(str(folder2), progress=False)['cached']
    assert not verify_label_maps(str(folder2), progress=False)['cached']


def test_hub_snapshot_is_verified_and_cached_outside_it(tmp_path, monkeypatch, user_cache):
    import huggingface_hub
    from huggingface_hub import constants
    hub = tmp_path / 'hub'
    folder = _folder(hub, 'datasets--org--maps', edit=_set('scores', 2, 0, np.nan))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(hub))
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda repo_id, **kw: str(folder))
    with pytest.raises(UserError, match="image 'img/002' .*NaN"):
        load_label_maps('org/maps')
    good = _folder(hub, 'datasets--org--good')
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda repo_id, **kw: str(good))
    assert len(load_label_maps('org/good', cache_dir=str(tmp_path / 'hf'))) == 6
    assert not (good / VERIFIED_FILE).exists() and list(user_cache.rglob('*.json'))


# -- the speed path ---------------------------------------------------------------------------

def test_checks_are_vectorised_per_row_group(tmp_path, monkeypatch):
    # 3000 maps of the ImageNet shape in one shard: no per-row Python, well under a second of CPU
    n = 3000
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(n, 5, 15, 15, generator=g).sort(1, descending=True).values
    classes = torch.randint(0, 1000, (n, 5, 15, 15), generator=g)
    info = dict(annotator='t', input_size=480, map_size=(15, 15), topk=5, dtype='float16', num_classes=1000)
    folder = write_maps_folder(tmp_path / 'm', [f'{i:05d}' for i in range(n)], [(scores, classes)], info,
                               shard_size=n)
    calls = []
    real_check = verify_mod._Shard.check

    def check(self, table, row0):
        calls.append(table.num_rows)
        return real_check(self, table, row0)
    monkeypatch.setattr(verify_mod._Shard, 'check', check)
    t = time.process_time()
    verify_label_maps(str(folder), num_classes=1000, use_cache=False, progress=False)
    cpu = time.process_time() - t
    assert calls == [n]  # one call for the shard's row group, not one per row
    assert cpu < 1.5, f'{cpu:.2f} s of CPU for {n} maps'  # ~0.1 s measured; ImageNet target < 60 s


# -- wiring: --relabel-maps --------------------------------------------------------------------

def test_relabel_training_refuses_bad_maps_before_training(tmp_path):
    from timm_multilabel.data.digits_grid import DigitsGrid
    from timm_multilabel.data.digits_maps import oracle_maps
    from timm_multilabel.training.relabel import build_relabel_training
    ds = DigitsGrid('train', num_samples=8, seed=0)
    scores, classes = oracle_maps(ds)
    scores = scores.clone()
    scores[5, 0, 1, 1] = float('nan')
    k, h, w = scores.shape[1:]
    folder = tmp_path / 'maps'
    _shard(folder, 0, 1, ds.image_ids, scores.reshape(8, -1).numpy().astype(np.float16),
           classes.reshape(8, -1).numpy().astype(np.uint8))
    write_dataset_card(str(folder), dict(annotator='oracle', input_size=48, map_size=(h, w), topk=k, dtype='float16',
                                         num_classes=10))
    args = argparse.Namespace(relabel_maps=str(folder), relabel_fill=0.0, relabel_mode='local')
    transform = dict(input_size=(3, 24, 24), scale=(0.5, 1.0), ratio=(0.9, 1.1), hflip=0.0, interpolation='bilinear',
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(UserError, match=rf"image '{ds.image_ids[5]}' \(row 5\) has NaN or inf scores"):
        build_relabel_training(args, ds, dict(transform), 10)
    args.relabel_maps = str(tmp_path / 'mpas')
    with pytest.raises(UserError, match=r'^--relabel-maps .*mpas: no such folder .*did you mean .*maps\?$'):
        build_relabel_training(args, ds, dict(transform), 10)


@pytest.mark.parametrize('path', ['./nope', '/no/such/maps', '~/no-such-maps-xyz', 'a/b/c', 'nope', 'ma ps/x'])
def test_local_looking_paths_say_no_such_folder(tmp_path, monkeypatch, path):
    import huggingface_hub
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda **kw: pytest.fail('took a path for a Hub id'))
    with pytest.raises(UserError, match=r'^--relabel-maps .*: no such folder \(no label-map dataset folder at /'):
        load_label_maps(path, arg_name='--relabel-maps')


def test_existing_parent_folder_makes_it_a_path(tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'maps' / 'imagenet-lite0').mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda **kw: pytest.fail('took a path for a Hub id'))
    with pytest.raises(UserError, match=r"^--relabel-maps maps/imagenet-lit0: no such folder .*did you mean "
                                        r"maps/imagenet-lite0\?$"):
        load_label_maps('maps/imagenet-lit0', arg_name='--relabel-maps')


def test_hub_id_not_cached_offline_or_unreachable(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    monkeypatch.chdir(tmp_path)

    def offline(**kw):
        raise LocalEntryNotFoundError('Cannot find the requested files in the disk cache ... ConnectError\nmore')
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', offline)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(UserError, match=r'^--relabel-maps org/maps: no such folder, and no Hub dataset org/maps in '
                                        r'the offline cache \(HF_HUB_OFFLINE is set\)$'):
        load_label_maps('org/maps', arg_name='--relabel-maps')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    with pytest.raises(UserError, match=r'^--relabel-maps org/maps: no such folder, and the Hub dataset org/maps is '
                                        r'neither in the local cache nor downloadable \(no network\?\)$'):
        load_label_maps('org/maps', arg_name='--relabel-maps')


def test_a_file_is_not_a_maps_folder(tmp_path):
    (tmp_path / 'maps.parquet').write_bytes(b'x')
    with pytest.raises(UserError, match='is a file; expected a label-map dataset folder'):
        load_label_maps(str(tmp_path / 'maps.parquet'))
