"""Property-based tests: malformed label-map shards, cards and tensors give a correct result or the
project's one-line ``UserError``, never another exception, never a hang.

Every example is generated from a seed (``derandomize=True``), so a failure reproduces; the
``deadline`` catches anything that would hang.
"""
import math
import os
import tempfile
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from timm_multilabel.errors import UserError  # noqa: E402
from timm_multilabel.relabel.maps import MAP_DTYPES, class_id_dtype, encode_maps  # noqa: E402
from timm_multilabel.relabel.pooling import densify_label_map, label_pool, map_rois  # noqa: E402
from timm_multilabel.relabel.store import LabelMapStore, load_label_maps  # noqa: E402
from timm_multilabel.relabel.verify import verify_label_maps  # noqa: E402
from timm_multilabel.relabel.writer import read_map_info, shard_name, write_table_atomic  # noqa: E402

FUZZ = settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_MULTILABEL_CACHE', str(tmp_path / 'user_cache'))


def one_line_user_error(fn):
    """Run ``fn``; a ``UserError`` must be one non-empty line (returned), anything else propagates."""
    try:
        return False, fn()
    except UserError as e:
        msg = str(e)
        assert msg and '\n' not in msg and len(msg) < 2000, repr(msg)
        return True, msg


# -- malformed label-map folders --------------------------------------------------------------

VALUE = ['nan', 'inf', 'class_high', 'class_neg', 'uint8_offset', 'uint8_scale']
# in layout 2 (fixed-shape [K, H, W] arrays) a row cannot be short or long: short_row / long_row /
# shifted_rows there give the shard another shape than the card's, null_* a null inside a map
# (odd rows) or a null map; mixed_layout writes shard 0 in the other layout, card_layout a wrong
# or bad layout_version
STRUCTURAL = ['short_row', 'long_row', 'shifted_rows', 'null_scores', 'null_classes', 'null_id', 'dup_id',
              'scores_type', 'classes_type', 'missing_column', 'truncate', 'card_field', 'card_missing',
              'card_garbage', 'card_count', 'class_names', 'mixed_layout', 'card_layout']
BAD_LAYOUTS = [3, 0, 'two', 2.5, True, [2], 'other']
BAD_FIELD_VALUES = {
    'annotator': [5, '', None, ['a'], {'a': 1}],
    'input_size': ['big', -1, 0, 2.5, True, [1, 2], None],
    'map_size': [4, [3], [3, 'x'], [0, 3], 'a', None, [1.5, 2], {'h': 1}],
    'topk': ['three', 0, -2, 2.0, True, None, [2]],
    'dtype': ['bfloat16', 3, None, ['float16'], 'int8'],
    'num_classes': [0, -5, 'ten', 1.5, None, False, [10]],
}


@st.composite
def folders(draw, mutations=VALUE + STRUCTURAL + ['none'] * 4 + ['flip']):
    case = dict(
        n=draw(st.integers(1, 6)), k=draw(st.integers(1, 3)), h=draw(st.integers(1, 3)), w=draw(st.integers(1, 3)),
        num_classes=draw(st.sampled_from([3, 10, 300, 40000])), dtype=draw(st.sampled_from(MAP_DTYPES)),
        shards=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2 ** 16)), mutation=draw(st.sampled_from(mutations)),
        layout=draw(st.sampled_from([1, 2])))
    m = case['mutation']
    if m == 'mixed_layout':
        case['n'], case['shards'] = max(case['n'], 2), 2
    case['bad_layout'] = draw(st.sampled_from(BAD_LAYOUTS))
    if m in ('uint8_offset', 'uint8_scale'):
        case['dtype'] = 'uint8'
    if m in ('nan', 'inf') and case['dtype'] == 'uint8':
        case['dtype'] = draw(st.sampled_from(['float16', 'float32']))
    if m == 'class_neg' and case['num_classes'] <= 256:
        case['num_classes'] = 300  # a signed class-id dtype
    if m in ('dup_id', 'shifted_rows'):
        case['n'] = max(case['n'], 2)
    if m == 'shifted_rows' and case['k'] * case['h'] * case['w'] < 2:
        case['k'] = 2
    case['row'] = draw(st.integers(0, case['n'] - 1))
    case['field'] = draw(st.sampled_from(sorted(BAD_FIELD_VALUES)))
    case['bad_value'] = draw(st.sampled_from(BAD_FIELD_VALUES[case['field']]))
    case['garbage'] = draw(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
    case['cut'] = draw(st.floats(0.0, 0.999))
    case['value'] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
    return case


def _case(layout, mutation, **kw):
    """One fixed case (besides the drawn ones): both layouts are always covered."""
    return dict(dict(n=4, k=2, h=2, w=3, num_classes=300, dtype='float16', shards=2, seed=7, mutation=mutation,
                     layout=layout, row=1, field='topk', bad_value=0, garbage='', cut=0.5, value=math.nan,
                     bad_layout='other'), **kw)


LAYOUT_EXAMPLES = [_case(1, 'none'), _case(2, 'none'), _case(2, 'none', dtype='uint8', num_classes=40000, shards=1),
                   _case(2, 'short_row'), _case(2, 'null_scores'), _case(1, 'mixed_layout'), _case(2, 'card_layout'),
                   _case(2, 'nan')]


def _with_layout_examples(test):
    for case in reversed(LAYOUT_EXAMPLES):
        test = example(case=case)(test)
    return test


def _expected(case):
    """The maps as the store should return them: scores [n, K, H, W] float32, classes int64, and
    the stored columns."""
    rng = np.random.default_rng(case['seed'])
    n, k, h, w, nc = case['n'], case['k'], case['h'], case['w'], case['num_classes']
    logits = -np.sort(-rng.normal(0, 3, size=(n, k, h, w)).astype(np.float32), axis=1)
    classes = rng.integers(0, nc, size=(n, k, h, w)).astype(class_id_dtype(nc))
    enc = encode_maps(torch.from_numpy(logits), torch.from_numpy(classes.astype(np.int64)), case['dtype'], nc)
    return enc


def _list_column(rows, value_type):
    lengths = [0 if r is None else len(r) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    present = [np.asarray(r) for r in rows if r is not None]
    values = pa.array(np.concatenate(present), value_type) if present else pa.array([], value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array([r is None for r in rows]))


def _fixed_column(rows, value_type, shape, null_inside=None):
    """[K, H, W] fixed-size lists of flat rows (None: a null map); ``null_inside``: a row whose first
    [H, W] plane is null."""
    numel = int(np.prod(shape))
    values = np.concatenate([np.zeros(numel) if r is None else np.asarray(r) for r in rows])
    arr = pa.array(values.astype(value_type.to_pandas_dtype()), value_type)
    for level in (2, 1, 0):  # rows of W, [H, W] planes, the maps
        mask = None
        if level == 0:
            mask = pa.array([r is None for r in rows])
        elif level == 1 and null_inside is not None:
            planes = np.zeros(len(arr) // shape[1], bool)
            planes[null_inside * shape[0]] = True
            mask = pa.array(planes)
        arr = pa.FixedSizeListArray.from_arrays(arr, shape[level], mask=mask)
    return arr


def _map_column(rows, value_type, case, shape, null_inside=None):
    if case['layout'] == 1:
        return _list_column(rows, value_type)
    return _fixed_column(rows, value_type, shape, null_inside)


def build_folder(root, case):
    """Write the case's folder (layout ``case['layout']``); returns (folder, expected scores,
    expected classes)."""
    m, nc, dtype = case['mutation'], case['num_classes'], case['dtype']
    layout, shape3 = case['layout'], (case['k'], case['h'], case['w'])
    enc = _expected(case)
    n, numel = enc.scores.shape
    scores = [r.copy() for r in enc.scores]
    classes = [r.copy() for r in enc.classes]
    offset = None if enc.offset is None else enc.offset.copy()
    scale = None if enc.scale is None else enc.scale.copy()
    ids = [f'd{i % 2}/img_{i:03d}' for i in range(n)]
    r = case['row']
    null_inside = {}
    if layout == 2 and m in ('short_row', 'long_row', 'shifted_rows'):
        # another shape than the card's: one more column (x) in every map of every shard
        k, h, w = shape3
        shape3 = (k, h, w + 1)
        scores = [np.concatenate([x.reshape(k, h, w), x.reshape(k, h, w)[..., :1]], -1).reshape(-1) for x in scores]
        classes = [np.concatenate([x.reshape(k, h, w), x.reshape(k, h, w)[..., :1]], -1).reshape(-1) for x in classes]
        m = 'reshaped'
    elif layout == 2 and m in ('null_scores', 'null_classes') and r % 2:
        null_inside[m[5:]] = r  # a null [H, W] plane inside map r (row r of its shard when in shard 0)
        m = 'null_inside'
    if m in ('nan', 'inf'):
        scores[r][r % numel] = (np.nan if math.isnan(case['value']) else np.inf) if m == 'nan' else -np.inf
    elif m == 'class_high':
        classes[r][numel - 1] = min(int(np.iinfo(classes[r].dtype).max), nc + r)
    elif m == 'class_neg':
        classes[r][0] = -1 - r
    elif m == 'uint8_offset':
        offset[r] = np.float32(np.inf if case['value'] > 3e38 else case['value'])  # 1e39: inf in float32
    elif m == 'uint8_scale':
        scale[r] = np.float32(np.inf if case['value'] > 3e38 else case['value']) if not math.isnan(case['value']) \
            else -0.5
    elif m == 'short_row':
        scores[r] = scores[r][:-1]
    elif m == 'long_row':
        classes[r] = np.concatenate([classes[r], classes[r][:1]])
    elif m == 'shifted_rows':
        j = (r + 1) % n
        scores[r], scores[j] = scores[r][:-1], np.concatenate([scores[j], scores[j][:1]])
    elif m == 'null_scores':
        scores[r] = None
    elif m == 'null_classes':
        classes[r] = None
    elif m == 'null_id':
        ids[r] = None
    elif m == 'dup_id':
        ids[r] = ids[(r + 1) % n]
    score_type = pa.from_numpy_dtype(np.dtype(dtype))
    class_type = pa.from_numpy_dtype(class_id_dtype(nc))
    if m == 'scores_type':
        score_type = {'float16': pa.float32(), 'float32': pa.float64(), 'uint8': pa.int8()}[dtype]
        scores = [None if s is None else s.astype(score_type.to_pandas_dtype()) for s in scores]
    if m == 'classes_type':
        class_type = pa.int64()
        classes = [c.astype(np.int64) for c in classes]
    folder = os.path.join(root, 'maps')
    per = -(-n // case['shards'])
    num_shards = -(-n // per)
    for s in range(num_shards):
        sl = slice(s * per, (s + 1) * per)
        c = dict(case, layout=3 - layout) if m == 'mixed_layout' and s == 0 else case
        inside = {k: v - s * per for k, v in null_inside.items() if s * per <= v < (s + 1) * per}
        cols = {'image_id': pa.array(ids[sl], pa.string()),
                'scores': _map_column(scores[sl], score_type, c, shape3, inside.get('scores')),
                'classes': _map_column(classes[sl], class_type, c, shape3, inside.get('classes'))}
        if dtype == 'uint8':
            cols['offset'] = pa.array(offset[sl], pa.float32())
            cols['scale'] = pa.array(scale[sl], pa.float32())
        if m == 'missing_column':
            cols.pop('classes')
        path = os.path.join(folder, shard_name(s, num_shards))
        write_table_atomic(pa.table(cols), path)
        if m == 'truncate' and s == 0:
            data = open(path, 'rb').read()
            open(path, 'wb').write(data[: int(len(data) * case['cut'])])
        if m == 'flip' and s == 0:
            data = bytearray(open(path, 'rb').read())
            rng = np.random.default_rng(case['seed'])
            for p in rng.integers(0, len(data), size=3):
                data[p] ^= int(rng.integers(1, 256))
            open(path, 'wb').write(bytes(data))
    meta = dict(annotator='fuzz', input_size=32, map_size=[case['h'], case['w']], topk=case['k'], dtype=dtype,
                num_classes=nc, num_images=n)
    if layout == 2 or case['seed'] % 2:  # layout 1: cards written before layout_version had none
        meta['layout_version'] = layout
    if m == 'card_layout':
        meta['layout_version'] = 3 - layout if case['bad_layout'] == 'other' else case['bad_layout']
    if m == 'card_field':
        meta[case['field']] = case['bad_value']
    elif m == 'card_missing':
        meta.pop(case['field'])
    elif m == 'card_count':
        meta['num_images'] = n + 1 + r
    elif m == 'class_names':
        meta['class_names'] = ['c0', 'c1'] if r % 2 else [1] * min(nc, 3)  # wrong length or not strings
    card = os.path.join(folder, 'README.md')
    if m == 'card_garbage':
        g = case['garbage']
        with open(card, 'wb' if isinstance(g, bytes) else 'w') as f:
            f.write(b'---\n' + g + b'\n---\n' if isinstance(g, bytes) else '---\n' + g + '\n---\n')
    else:
        with open(card, 'w', encoding='utf-8') as f:
            f.write('---\n' + yaml.safe_dump({'license': 'other', 'label_maps': meta}) + '---\n# maps\n')
    shape = (n, case['k'], case['h'], case['w'])
    if m in STRUCTURAL or m in ('flip', 'reshaped', 'null_inside'):  # refused (or garbled): nothing to compare
        return folder, ids, None, None
    stored = np.stack(scores).astype(np.float32)
    with np.errstate(all='ignore'):
        want_scores = stored if dtype != 'uint8' else offset[:, None] + scale[:, None] * stored
    return folder, ids, want_scores.reshape(shape), np.stack(classes).astype(np.int64).reshape(shape)


def _check_store(store, case, ids, want_scores, want_classes, faithful):
    s, c = store.get_batch(ids)
    order = np.arange(len(ids))
    assert s.shape == c.shape == want_scores.shape and s.dtype == torch.float32 and c.dtype == torch.int64
    np.testing.assert_array_equal(c.numpy(), want_classes[order])
    np.testing.assert_allclose(s.numpy(), want_scores[order], rtol=1e-6, atol=1e-6)
    if not faithful:
        assert torch.isfinite(s).all() and int(c.min()) >= 0 and int(c.max()) < case['num_classes']


@FUZZ
@given(case=folders())
@_with_layout_examples
def test_fuzz_load_label_maps_verified(case):
    """load_label_maps (verifying): a good folder reads back exactly, anything else is one UserError line."""
    with tempfile.TemporaryDirectory() as root:
        folder, ids, want_s, want_c = build_folder(root, case)
        failed, out = one_line_user_error(lambda: load_label_maps(folder, cache_dir=os.path.join(root, 'hf'),
                                                                  progress=False))
        if case['mutation'] == 'none':
            assert not failed, out
            _check_store(out, case, ids, want_s, want_c, faithful=False)
        elif case['mutation'] == 'flip':  # may or may not be detectable: what is returned must still be sane
            if not failed:
                s, c = out.get_batch(out.image_ids)
                assert torch.isfinite(s).all() and int(c.min()) >= 0 and int(c.max()) < case['num_classes']
        else:
            assert failed, f'{case["mutation"]} was accepted'
            # verify names what it checks, and a second call (cache) refuses again
            failed2, _ = one_line_user_error(lambda: verify_label_maps(folder, progress=False))
            assert failed2


@pytest.mark.filterwarnings('ignore::RuntimeWarning')  # uint8 offset/scale of inf decode faithfully to inf
@FUZZ
@given(case=folders(mutations=VALUE + STRUCTURAL + ['none'] * 3))
@_with_layout_examples
def test_fuzz_label_map_store_unverified(case):
    """LabelMapStore without the pre-flight: structural damage is one UserError line, values come back as
    written (NaN, out-of-range ids are the pre-flight's job)."""
    with tempfile.TemporaryDirectory() as root:
        folder, ids, want_s, want_c = build_folder(root, case)

        def read():
            store = LabelMapStore(folder, cache_dir=os.path.join(root, 'hf'))
            _check_store(store, case, ids, want_s, want_c, faithful=True)
            return store
        failed, out = one_line_user_error(read)
        if case['mutation'] in STRUCTURAL:
            assert failed, f'{case["mutation"]} was accepted'
        else:
            assert not failed, out


# -- the card reader ------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=6)
_GOOD = dict(annotator='m', input_size=32, map_size=[3, 3], topk=2, dtype='float16', num_classes=4)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(_GOOD) + ['class_names', 'num_images', 'layout_version']),
                               st.one_of(_values, st.sampled_from([1, 2])),
                               max_size=3),
       drop=st.lists(st.sampled_from(sorted(_GOOD)), max_size=2))
def test_fuzz_card_reader(changes, drop):
    meta = {**_GOOD, **changes}
    for key in drop:
        meta.pop(key, None)
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, 'README.md'), 'w', encoding='utf-8') as f:
            f.write('---\n' + yaml.safe_dump({'label_maps': meta}) + '---\n')
        failed, info = one_line_user_error(lambda: read_map_info(folder))
    if failed:
        return
    for key in ('input_size', 'topk', 'num_classes'):
        assert type(info[key]) is int and info[key] > 0
    assert isinstance(info['map_size'], tuple) and len(info['map_size']) == 2
    assert all(type(v) is int and v > 0 for v in info['map_size'])
    assert info['dtype'] in MAP_DTYPES and isinstance(info['annotator'], str)
    assert info['layout_version'] in (1, 2) and type(info['layout_version']) is int
    names = info.get('class_names')
    assert names is None or (len(names) == info['num_classes'] and all(isinstance(x, str) for x in names))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode('latin-1'))))
def test_fuzz_card_garbage(text):
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, 'README.md'), 'w', encoding='utf-8', errors='surrogateescape') as f:
            f.write('---\n' + text + '\n---\n' if len(text) % 2 else text)
        failed, _ = one_line_user_error(lambda: read_map_info(folder))
    assert failed  # no garbage holds all the required label_maps fields


# -- tensors: encode_maps and label_pool ------------------------------------------------------

@FUZZ
@given(shape=st.lists(st.integers(0, 3), min_size=1, max_size=5), dtype=st.sampled_from(MAP_DTYPES),
       num_classes=st.sampled_from([1, 5, 300]), poison=st.sampled_from([None, 'nan', 'inf', 'neg', 'high', 'big',
                                                                         'float_ids', 'shape']),
       seed=st.integers(0, 999))
def test_fuzz_encode_maps(shape, dtype, num_classes, poison, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=g) * 3
    classes = torch.randint(0, num_classes, tuple(shape), generator=g)
    if scores.numel():
        flat_s, flat_c = scores.view(-1), classes.view(-1)
        if poison == 'nan':
            flat_s[seed % flat_s.numel()] = float('nan')
        elif poison == 'inf':
            flat_s[seed % flat_s.numel()] = float('-inf')
        elif poison == 'neg':
            flat_c[seed % flat_c.numel()] = -1
        elif poison == 'high':
            flat_c[seed % flat_c.numel()] = num_classes
        elif poison == 'big':
            flat_s[seed % flat_s.numel()] = 1e6
    if poison == 'float_ids':
        classes = classes.float() + 0.5
    if poison == 'shape':
        classes = classes.reshape(-1)
    failed, enc = one_line_user_error(lambda: encode_maps(scores, classes, dtype, num_classes))
    valid_shape = len(shape) == 4 and poison not in ('shape',) and 0 not in shape[1:]
    bad_value = scores.numel() and poison in ('nan', 'inf', 'neg', 'high', 'float_ids') or (
        poison == 'big' and dtype == 'float16' and scores.numel())
    if not valid_shape or bad_value:
        assert failed
        return
    assert not failed, enc
    n = shape[0]
    assert enc.scores.shape == (n, int(np.prod(shape[1:]))) and enc.classes.shape == enc.scores.shape


_BOX_KINDS = ['ok', 'ok', 'ok', 'outside', 'flipped', 'nan', 'inf', 'shape', 'int', 'half']


@FUZZ
@given(n=st.integers(0, 3), k=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       num_classes=st.one_of(st.integers(1, 12), st.sampled_from([0, -1, 2.0, True])),
       score_kind=st.sampled_from(['f32', 'f32', 'f16', 'f64', 'int', 'nan', 'inf', 'ndim']),
       class_kind=st.sampled_from(['i64', 'i64', 'u8', 'i32', 'float', 'bool', 'high', 'neg', 'shape']),
       box_kind=st.sampled_from(_BOX_KINDS),
       output_size=st.sampled_from([1, 1, (2, 3), 2, 0, -1, 'a', (1,), (2, True)]),
       fill=st.sampled_from([0.0, 0.0, -2.5, math.nan, math.inf]), aligned=st.booleans(), seed=st.integers(0, 999))
def test_fuzz_label_pool(n, k, h, w, num_classes, score_kind, class_kind, box_kind, output_size, fill, aligned, seed):
    """label_pool: a valid input pools to the densify + roi_align reference, anything else is one UserError line."""
    g = torch.Generator().manual_seed(seed)
    c_int = num_classes if type(num_classes) is int and num_classes > 0 else 4
    scores = torch.randn(n, k, h, w, generator=g, dtype=torch.float64) * 3
    distinct = c_int >= k
    if distinct:
        classes = torch.stack([torch.randperm(c_int, generator=g)[:k] for _ in range(n * h * w)]) if n else \
            torch.zeros(0, k, dtype=torch.long)
        classes = classes.reshape(n, h, w, k).permute(0, 3, 1, 2).contiguous()
    else:
        classes = torch.randint(0, c_int, (n, k, h, w), generator=g)
    x1y1 = torch.rand(n, 2, generator=g) * 0.6
    boxes = torch.cat([x1y1, x1y1 + 0.05 + torch.rand(n, 2, generator=g) * 0.35], 1).clamp(max=1.0)
    valid = type(num_classes) is int and num_classes > 0
    valid &= output_size in (1, 2, (2, 3)) and not (isinstance(fill, float) and not math.isfinite(fill))
    has_rows = n > 0
    scores = {'f32': scores.float(), 'f16': scores.half(), 'f64': scores, 'int': scores.long(), 'nan': scores,
              'inf': scores, 'ndim': scores.reshape(n, k, h * w)}[score_kind]
    if score_kind in ('nan', 'inf') and has_rows:
        scores.view(-1)[seed % scores.numel()] = math.nan if score_kind == 'nan' else -math.inf
        valid = False
    valid &= score_kind not in ('int', 'ndim')
    classes = {'i64': classes, 'u8': classes.to(torch.uint8) if c_int <= 255 else classes, 'i32': classes.int(),
               'float': classes.float(), 'bool': classes.bool(), 'high': classes.clone(), 'neg': classes.clone(),
               'shape': classes[:, :1]}[class_kind]
    if class_kind in ('high', 'neg') and has_rows:
        classes.view(-1)[seed % classes.numel()] = c_int if class_kind == 'high' else -1
        valid = False
    valid &= class_kind not in ('float', 'bool') and not (class_kind == 'shape' and k > 1)
    if box_kind == 'outside' and has_rows:
        boxes[seed % n, 2] = 1.5
        valid = False
    elif box_kind == 'flipped' and has_rows:
        boxes[seed % n, [0, 2]] = boxes[seed % n, [2, 0]]
        valid = False
    elif box_kind in ('nan', 'inf') and has_rows:
        boxes[seed % n, 1] = math.nan if box_kind == 'nan' else math.inf
        valid = False
    elif box_kind == 'shape':
        boxes = boxes[:, :3]
        valid = False
    elif box_kind == 'int':
        boxes = (boxes > 0.5).long()
        valid = False
    elif box_kind == 'half':
        boxes = boxes.half()
    failed, out = one_line_user_error(lambda: label_pool(scores, classes, boxes, num_classes, output_size, fill,
                                                         aligned=aligned))
    if not valid:
        assert failed, ('accepted', score_kind, class_kind, box_kind, output_size, fill, num_classes)
        return
    assert not failed, out
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    want_shape = (n, num_classes) if (oh, ow) == (1, 1) else (n, num_classes, oh, ow)
    assert tuple(out.shape) == want_shape and torch.isfinite(out).all()
    if n:
        assert torch.allclose(out.sum(1), torch.ones(()).to(out.dtype), atol=1e-4)
    if n and distinct:
        from torchvision.ops import roi_align
        dense = densify_label_map(scores.double(), classes.long(), num_classes, fill)
        rois = map_rois(boxes.double(), (h, w), aligned)
        ref = roi_align(dense, rois, (oh, ow), 1.0, -1, aligned).softmax(1)
        ref = ref.flatten(1) if (oh, ow) == (1, 1) else ref
        assert torch.allclose(out.double(), ref, atol=2e-3 if scores.dtype == torch.float16 else 1e-4)
