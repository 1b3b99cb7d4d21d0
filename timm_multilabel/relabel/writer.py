"""Label-map dataset folders: atomic Parquet shards, the dataset card, resume bookkeeping, push.

Layout of a folder (what ``datasets.load_dataset(folder, split="train")`` reads)::

    README.md                                  dataset card (hub_cards/dataset_card.md)
    data/train-00000-of-00128.parquet          shard s of n: images s*shard_size ... (sorted ids)
    ...
    .label_maps_run.json                       run plan, for --resume (not uploaded)

Every shard is one Parquet file of rows ``image_id`` (string), ``scores`` (float16/float32/uint8),
``classes`` (uint8/int16/int32) and, for uint8, ``offset`` / ``scale`` (float32); see ``maps.py``.
Parquet: zstd, byte-stream-split for the scores and class ids. Two layouts of ``scores`` /
``classes``, recorded in the card as ``label_maps.layout_version``:

* 2 (``LAYOUT_FIXED``, what is written now): fixed-shape ``[K, H, W]`` arrays, Arrow
  ``fixed_size_list<fixed_size_list<fixed_size_list<T>[W]>[H]>[K]`` (🤗 Datasets
  ``List(List(List(Value(T), length=W), length=H), length=K)``), so that
  ``load_dataset(folder).with_format('torch')`` gives ``[K, H, W]`` tensors;
* 1 (``LAYOUT_FLAT``, folders written before): one list of K*H*W values in ``[K, H, W]`` order;
  a card without ``layout_version`` is layout 1. Both are read; a folder holds one layout.

A shard is written to a hidden temp file in ``data/`` and renamed into place, so a shard file
that exists is complete: shards are the unit of resume.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from huggingface_hub import DatasetCard, DatasetCardData, constants

from ..cards import template_path
from ..errors import UserError, typed_error_line
from ..fileio import TMP_MARK, atomic_path, atomic_write_text
from .maps import MAP_DTYPES, EncodedMaps, class_id_dtype, encode_maps

__all__ = [
    'DATA_DIR', 'SHARD_GLOB', 'RUN_FILE', 'CARD_FILE', 'shard_name', 'list_shards', 'map_schema', 'maps_table',
    'write_table_atomic', 'write_shard', 'ShardWriter', 'write_run_plan', 'read_run_plan', 'ids_fingerprint',
    'write_dataset_card', 'read_map_info', 'check_map_info', 'push_maps', 'dataset_card_template',
    'remove_map_files', 'write_maps_folder', 'VERIFIED_FILE', 'LAYOUT_FLAT', 'LAYOUT_FIXED', 'LAYOUT_VERSION',
    'LAYOUT_NAMES', 'shard_layout', 'check_one_layout', 'folder_layout',
]

_logger = logging.getLogger(__name__)

DATA_DIR = 'data'
SHARD_GLOB = 'data/train-*.parquet'
RUN_FILE = '.label_maps_run.json'
VERIFIED_FILE = '.label_maps_verified.json'  # verify_label_maps' cache (not uploaded)
CARD_FILE = 'README.md'
_SHARD_RE = re.compile(r'^train-(\d{5,})-of-(\d{5,})\.parquet$')
_ZSTD_LEVEL = 3

LAYOUT_FLAT = 1   # scores / classes: list<T> of K*H*W values ([K, H, W] in C order)
LAYOUT_FIXED = 2  # scores / classes: fixed_size_list<fixed_size_list<fixed_size_list<T>[W]>[H]>[K]
LAYOUT_VERSION = LAYOUT_FIXED  # the layout new maps are written in
LAYOUT_NAMES = {LAYOUT_FLAT: 'flat [K*H*W] lists (layout 1)', LAYOUT_FIXED: 'fixed-shape [K, H, W] arrays (layout 2)'}


def shard_name(index: int, num_shards: int) -> str:
    """``data/train-00003-of-00010.parquet`` (the name datasets maps to split 'train')."""
    return f'{DATA_DIR}/train-{index:05d}-of-{num_shards:05d}.parquet'


def list_shards(folder: str) -> List[str]:
    """Sorted paths of the finished shards in ``folder/data`` (temp files excluded)."""
    data = os.path.join(folder, DATA_DIR)
    if not os.path.isdir(data):
        return []
    return sorted(os.path.join(data, n) for n in os.listdir(data) if _SHARD_RE.match(n))


def _check_layout(layout: Any, shape: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
    if layout not in LAYOUT_NAMES:
        raise UserError(f'unknown label-map layout {layout!r}; expected {LAYOUT_FLAT} (flat) or {LAYOUT_FIXED} (fixed-shape)')
    if layout == LAYOUT_FLAT:
        return None
    if shape is None or len(shape) != 3 or not all(int(v) > 0 for v in shape):
        raise UserError(f'label-map layout {LAYOUT_FIXED} needs the map shape (K, H, W), got {shape!r}')
    return tuple(int(v) for v in shape)


def _map_type(value: pa.DataType, layout: int, shape: Optional[Sequence[int]]) -> pa.DataType:
    if layout == LAYOUT_FLAT:
        return pa.list_(value)
    for d in reversed(tuple(shape)):
        value = pa.list_(value, int(d))
    return value


def map_schema(dtype: str, num_classes: int, layout: int = LAYOUT_VERSION,
               shape: Optional[Sequence[int]] = None) -> pa.Schema:
    """Arrow schema of one shard for scores stored as ``dtype`` in ``layout`` (``shape`` (K, H, W)
    for the fixed layout)."""
    if dtype not in MAP_DTYPES:
        raise UserError(f'unknown label-map dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')
    shape = _check_layout(layout, shape)
    fields = [
        pa.field('image_id', pa.string()),
        pa.field('scores', _map_type(pa.from_numpy_dtype(np.dtype(dtype)), layout, shape)),
        pa.field('classes', _map_type(pa.from_numpy_dtype(class_id_dtype(num_classes)), layout, shape)),
    ]
    if dtype == 'uint8':
        fields += [pa.field('offset', pa.float32()), pa.field('scale', pa.float32())]
    return pa.schema(fields)


def _list_array(values: np.ndarray) -> pa.ListArray:
    n, m = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * m)
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values).reshape(-1)))


def _fixed_array(values: np.ndarray, shape: Sequence[int]) -> pa.FixedSizeListArray:
    arr = pa.array(np.ascontiguousarray(values).reshape(-1))
    for d in reversed(tuple(shape)):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(d))
    return arr


def shard_layout(schema: pa.Schema) -> Tuple[Optional[int], Optional[Tuple[int, ...]]]:
    """``(layout, shape)`` of a shard from its ``scores`` column: ``(LAYOUT_FLAT, None)``,
    ``(LAYOUT_FIXED, (K, H, W))``, or ``(None, None)`` when it is neither."""
    if 'scores' not in schema.names:
        return None, None
    t = schema.field('scores').type
    if pa.types.is_list(t):
        return LAYOUT_FLAT, None
    dims = []
    while pa.types.is_fixed_size_list(t):
        dims.append(int(t.list_size))
        t = t.value_type
    return (LAYOUT_FIXED, tuple(dims)) if len(dims) == 3 else (None, None)


def check_one_layout(folder: str, schemas: Sequence[Tuple[str, pa.Schema]]) -> Optional[int]:
    """The layout of a folder's shards ``[(path, schema)]``; shards in two layouts are refused in
    one line. None when no shard has a known layout (the schema check then says what is wrong)."""
    seen: Dict[int, str] = {}
    for path, schema in schemas:
        layout = shard_layout(schema)[0]
        if layout is not None:
            seen.setdefault(layout, path)
    if len(seen) > 1:
        (a, pa_), (b, pb) = sorted(seen.items(), key=lambda kv: kv[1])  # in file order
        raise UserError(f'label maps {folder}: shards in two layouts, {os.path.basename(pa_)} in {LAYOUT_NAMES[a]} '
                        f'and {os.path.basename(pb)} in {LAYOUT_NAMES[b]}; a folder holds one layout '
                        f'(write it again in one)')
    return next(iter(seen), None)


def _read_schemas(shards: Sequence[str]) -> List[Tuple[str, pa.Schema]]:
    schemas = []
    for path in shards:
        try:
            schemas.append((path, pq.read_schema(path)))
        except Exception as e:  # noqa: BLE001 -- truncated, garbled: one line
            raise UserError(f'unreadable label-map shard {path} ({type(e).__name__}: '
                            f'{" ".join(str(e).split())[:200]})') from e
    return schemas


def folder_layout(folder: str, shards: Optional[Sequence[str]] = None) -> Optional[int]:
    """The layout of the shards in ``folder`` (their Parquet footers only); see ``check_one_layout``."""
    return check_one_layout(folder, _read_schemas(list_shards(folder) if shards is None else shards))


def maps_table(image_ids: Sequence[str], encoded: EncodedMaps, dtype: str, num_classes: int,
               layout: int = LAYOUT_VERSION) -> pa.Table:
    """Arrow table of N encoded maps (rows in the given order) in ``layout``."""
    shape = _check_layout(layout, encoded.shape)
    schema = map_schema(dtype, num_classes, layout, shape)
    if layout == LAYOUT_FLAT:
        maps = [_list_array(encoded.scores), _list_array(encoded.classes)]
    else:
        maps = [_fixed_array(encoded.scores, shape), _fixed_array(encoded.classes, shape)]
    cols = [pa.array(list(image_ids), pa.string())] + maps
    if dtype == 'uint8':
        cols += [pa.array(encoded.offset, pa.float32()), pa.array(encoded.scale, pa.float32())]
    return pa.Table.from_arrays(cols, schema=schema)


def _value_column_path(name: str, t: pa.DataType) -> Optional[str]:
    """Parquet path of the values of a (nested) list column, None unless numeric."""
    path = name
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        path += '.list.element'
        t = t.value_type
    return path if path != name and (pa.types.is_integer(t) or pa.types.is_floating(t)) else None


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write ``table`` as Parquet to ``path`` atomically (see :mod:`timm_multilabel.fileio`)."""
    split = [p for p in (_value_column_path(n, table.schema.field(n).type) for n in ('scores', 'classes')
                         if n in table.schema.names) if p]
    with atomic_path(path, suffix='.parquet') as tmp:
        pq.write_table(
            table, str(tmp), compression='zstd', compression_level=_ZSTD_LEVEL,
            use_dictionary=['image_id'],
            use_byte_stream_split=split or False,
            row_group_size=max(1, min(len(table), 4096)),
        )


def write_shard(folder: str, index: int, num_shards: int, image_ids: Sequence[str], scores, classes,
                dtype: str, num_classes: int, layout: int = LAYOUT_VERSION) -> str:
    """Encode ``scores / classes [N, K, H, W]`` and write shard ``index`` of ``num_shards`` atomically
    in ``layout`` (the fixed-shape one unless told)."""
    _check_layout(layout, (1, 1, 1))
    encoded = encode_maps(scores, classes, dtype, num_classes, image_ids)
    path = os.path.join(folder, shard_name(index, num_shards))
    write_table_atomic(maps_table(image_ids, encoded, dtype, num_classes, layout), path)
    return path


class ShardWriter:
    """Writes shards on a background thread so that annotation never waits for zstd.

    ``submit(index, image_ids, scores, classes)`` queues one shard (at most ``max_pending``
    waiting); ``close()`` waits for all of them. An error in the thread (e.g. a NaN map) is
    raised by the next ``submit`` or by ``close``. ``layout``: see ``write_shard``.
    """

    def __init__(self, folder: str, num_shards: int, dtype: str, num_classes: int, max_pending: int = 2,
                 layout: int = LAYOUT_VERSION):
        _check_layout(layout, (1, 1, 1))
        self.folder, self.num_shards, self.dtype, self.num_classes = folder, num_shards, dtype, num_classes
        self.layout = layout
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: Optional[BaseException] = None
        self.written: List[str] = []
        self._thread = threading.Thread(target=self._work, name='label-map-writer', daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.written.append(write_shard(self.folder, item[0], self.num_shards, item[1], item[2],
                                                    item[3], self.dtype, self.num_classes, self.layout))
            except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread
                self._error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, index: int, image_ids: Sequence[str], scores, classes) -> None:
        self._raise()
        self._queue.put((index, list(image_ids), scores, classes))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()


def _is_temp(name: str) -> bool:
    # fileio's temporary names (``.NAME.tmp-PID-...``) and older ones (``.tmp-...``)
    return name.startswith('.') and TMP_MARK in name


def remove_map_files(folder: str, everything: bool = False) -> None:
    """Delete stale temp files in ``folder/data``; with ``everything`` also the shards, the card
    and the run plan (only files this package writes)."""
    data = os.path.join(folder, DATA_DIR)
    if os.path.isdir(data):
        for name in os.listdir(data):
            if _is_temp(name) or (everything and _SHARD_RE.match(name)):
                os.unlink(os.path.join(data, name))
    if everything:
        for name in (CARD_FILE, RUN_FILE, VERIFIED_FILE):
            p = os.path.join(folder, name)
            if os.path.exists(p):
                os.unlink(p)


# -- resume bookkeeping ----------------------------------------------------------------------

def ids_fingerprint(image_ids: Sequence[str]) -> str:
    """sha256 of the ordered image ids (tells whether a resumed run sees the same images)."""
    h = hashlib.sha256()
    for i in image_ids:
        h.update(i.encode('utf-8'))
        h.update(b'\n')
    return h.hexdigest()


def write_run_plan(folder: str, plan: Dict[str, Any]) -> None:
    """Record what a run is writing (model, sizes, dtype, shard plan, image-id fingerprint)."""
    atomic_write_text(os.path.join(folder, RUN_FILE), json.dumps(plan, indent=1, sort_keys=True))


def read_run_plan(folder: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(folder, RUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the run plan {path}: {e}') from e


# -- dataset card ----------------------------------------------------------------------------

def dataset_card_template() -> str:
    """Path of ``hub_cards/dataset_card.md``."""
    try:
        return str(template_path('dataset_card.md'))
    except FileNotFoundError as e:
        raise UserError(str(e)) from e


def _features(dtype: str, num_classes: int, layout: int = LAYOUT_VERSION, shape: Optional[Sequence[int]] = None):
    import datasets

    def maps(value):
        if layout == LAYOUT_FLAT:
            return datasets.List(value)
        for d in reversed(tuple(shape)):
            value = datasets.List(value, length=int(d))
        return value

    feats = {
        'image_id': datasets.Value('string'),
        'scores': maps(datasets.Value(dtype)),
        'classes': maps(datasets.Value(str(class_id_dtype(num_classes)))),
    }
    if dtype == 'uint8':
        feats.update(offset=datasets.Value('float32'), scale=datasets.Value('float32'))
    return datasets.Features(feats)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, 'n<1K'), (10_000, '1K<n<10K'), (100_000, '10K<n<100K'),
                        (1_000_000, '100K<n<1M'), (10_000_000, '1M<n<10M')):
        if n < limit:
            return name
    return '10M<n<100M'


_REQUIRED = ('annotator', 'input_size', 'map_size', 'topk', 'dtype', 'num_classes')


def write_dataset_card(folder: str, info: Dict[str, Any]) -> str:
    """Render ``folder/README.md`` from ``hub_cards/dataset_card.md``.

    ``info`` keys: ``annotator`` (model name), ``weights``, ``input_size`` (S), ``map_size``
    ``(H, W)``, ``topk``, ``dtype``, ``num_classes``, optional ``class_names``, ``license``,
    ``source``, ``pretty_name``, ``repo_id``. ``num_images``, the byte counts and the layout
    (``layout_version``) are taken from the shards: shards in two layouts, or fixed-shape ones of
    another shape than ``(topk, *map_size)``, or a ``layout_version`` in ``info`` that the shards
    are not in, are refused. The metadata lands in the YAML header: ``configs``
    (data/train-*.parquet -> split train), ``dataset_info`` (features, split sizes) and
    ``label_maps`` (all of ``info``).
    """
    import datasets  # heavy; only when a card is written

    missing = [k for k in _REQUIRED if info.get(k) is None]
    if missing:
        raise UserError(f'label-map info lacks {", ".join(missing)}')
    shards = list_shards(folder)
    if not shards:
        raise UserError(f'no shards ({SHARD_GLOB}) in {folder}')
    num_images = sum(pq.read_metadata(p).num_rows for p in shards)
    num_bytes = sum(os.path.getsize(p) for p in shards)
    dtype, num_classes = info['dtype'], int(info['num_classes'])
    h, w = (int(v) for v in info['map_size'])
    topk = int(info['topk'])
    schemas = _read_schemas(shards)
    layout = check_one_layout(folder, schemas)
    if layout is None:
        raise UserError(f'label maps {folder}: the scores of {os.path.basename(shards[0])} are neither '
                        f'{LAYOUT_NAMES[LAYOUT_FLAT]} nor {LAYOUT_NAMES[LAYOUT_FIXED]}')
    if info.get('layout_version') is not None and info['layout_version'] != layout:
        raise UserError(f'label maps {folder}: the shards are in {LAYOUT_NAMES[layout]}, '
                        f'not layout_version {info["layout_version"]!r}')
    for path, schema in schemas if layout == LAYOUT_FIXED else ():
        got = shard_layout(schema)[1]
        if got != (topk, h, w):
            what = f'{list(got)} maps' if got else 'no [K, H, W] arrays'
            raise UserError(f'label maps {folder}: {os.path.basename(path)} holds {what}, the card\'s '
                            f'topk and map_size say {[topk, h, w]}')
    class_names = info.get('class_names')
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f'label-map info: {len(class_names)} class names for {num_classes} classes')
    meta = {
        'annotator': str(info['annotator']),
        'weights': str(info.get('weights') or 'unknown'),
        'input_size': int(info['input_size']),
        'map_size': [h, w],
        'topk': topk,
        'dtype': dtype,
        'class_dtype': str(class_id_dtype(num_classes)),
        'num_classes': num_classes,
        'num_images': num_images,
        'layout_version': layout,
        'layout': ('scores and classes are [K, H, W] arrays (fixed-size lists); rows are y (top first), columns x'
                   if layout == LAYOUT_FIXED else
                   'scores and classes flattened from [K, H, W] (C order); rows are y (top first), columns x'),
        'scores': 'logits before softmax, descending over K at every cell',
        'quantization': ('uint8 per map: score = offset + scale * q, offset = min, scale = (max - min) / 255'
                         if dtype == 'uint8' else 'none'),
        'source': str(info.get('source') or 'timm-multilabel annotate'),
        'repo_id': info.get('repo_id'),
        'class_names': list(class_names) if class_names is not None else None,
    }
    for key in ('mean', 'std', 'interpolation'):
        if info.get(key) is not None:
            meta[key] = info[key]
    card_data = DatasetCardData(
        license=info.get('license') or 'other',
        pretty_name=info.get('pretty_name') or f'ReLabel label maps ({meta["annotator"]})',
        task_categories=['image-classification'],
        size_categories=[_size_category(num_images)],
        tags=['label-maps', 'relabel', 'timm', 'timm-multilabel'],
        configs=[{'config_name': 'default', 'data_files': [{'split': 'train', 'path': SHARD_GLOB}]}],
        label_maps=meta,
    )
    ds_info = datasets.DatasetInfo(
        features=_features(dtype, num_classes, layout, (topk, h, w)),
        splits=datasets.SplitDict({'train': datasets.SplitInfo('train', num_bytes=num_bytes,
                                                               num_examples=num_images)}),
        download_size=num_bytes, dataset_size=num_bytes)
    datasets.info.DatasetInfosDict({'default': ds_info}).to_dataset_card_data(card_data)
    card = DatasetCard.from_template(
        card_data, template_path=dataset_card_template(),
        bytes_per_map=round(num_bytes / max(num_images, 1)), shape=f'[{topk}, {h}, {w}]', num_shards=len(shards),
        **{k: v for k, v in meta.items() if k != 'class_names'})
    path = os.path.join(folder, CARD_FILE)
    atomic_write_text(path, str(card))
    return path


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_map_info(meta: Any, where: str) -> Dict[str, Any]:
    """Validate the ``label_maps`` metadata of a card; returns it normalized (``map_size`` a tuple).

    Required: ``annotator`` (str), ``input_size`` (positive int), ``map_size`` ([H, W] positive
    ints), ``topk`` (positive int), ``dtype`` (one of ``MAP_DTYPES``), ``num_classes`` (positive
    int); optional: ``class_names`` (``num_classes`` strings), ``num_images`` (int >= 0),
    ``layout_version`` (1 or 2; absent: 1, the flat layout of the cards written before it).
    Anything else is refused with one ``UserError`` line naming ``where`` and the field."""
    if not isinstance(meta, dict):
        raise UserError(f'{where} has no label_maps metadata ({", ".join(_REQUIRED)})')
    missing = [k for k in _REQUIRED if meta.get(k) is None]
    if missing:
        raise UserError(f'{where}: label_maps lacks {", ".join(missing)} (needs {", ".join(_REQUIRED)})')

    def bad(key: str, want: str) -> UserError:
        return UserError(f'{where}: label_maps.{key} is {meta[key]!r}, expected {want}'[:400])

    if not isinstance(meta['annotator'], str) or not meta['annotator'].strip():
        raise bad('annotator', 'a model name (string)')
    for key in ('input_size', 'topk', 'num_classes'):
        if not _is_int(meta[key]) or meta[key] <= 0:
            raise bad(key, 'a positive integer')
    size = meta['map_size']
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
        raise bad('map_size', '[H, W], two positive integers')
    if not isinstance(meta['dtype'], str) or meta['dtype'] not in MAP_DTYPES:
        raise bad('dtype', f'one of {", ".join(MAP_DTYPES)}')
    names = meta.get('class_names')
    if names is not None:
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise UserError(f'{where}: label_maps.class_names must be a list of strings')
        if len(names) != meta['num_classes']:
            raise UserError(f'{where}: label_maps.class_names has {len(names)} names for '
                            f'{meta["num_classes"]} classes')
    num = meta.get('num_images')
    if num is not None and (not _is_int(num) or num < 0):
        raise bad('num_images', 'a count (integer >= 0)')
    layout = meta.get('layout_version', LAYOUT_FLAT)
    if not _is_int(layout) or layout not in LAYOUT_NAMES:
        raise bad('layout_version', f'{LAYOUT_FLAT} (flat lists) or {LAYOUT_FIXED} (fixed-shape arrays); '
                                    f'a newer timm-multilabel may have written it')
    meta = dict(meta)
    meta['layout_version'] = int(layout)
    meta['map_size'] = tuple(int(v) for v in size)
    for key in ('input_size', 'topk', 'num_classes'):
        meta[key] = int(meta[key])
    return meta


def read_map_info(folder: str) -> Dict[str, Any]:
    """The ``label_maps`` metadata of ``folder/README.md`` (annotator, weights, input_size,
    map_size, topk, dtype, num_classes, class_names, num_images, ...), plus ``license``.
    Fields of the wrong type are refused in one line (see :func:`check_map_info`)."""
    path = os.path.join(folder, CARD_FILE)
    if not os.path.isfile(path):
        hint = ' (an unfinished annotate run? continue it with --resume)' if os.path.exists(
            os.path.join(folder, RUN_FILE)) else ''
        raise UserError(f'no dataset card {path}: not a label-map dataset{hint}')
    try:
        data = DatasetCard.load(path).data.to_dict()
    except Exception as e:  # noqa: BLE001 -- YAML errors, bad encodings: one line
        text = ' '.join(str(e).split())[:300]
        raise UserError(f'cannot read the dataset card {path}: {type(e).__name__}: {text}') from e
    if not isinstance(data, dict):
        raise UserError(f'dataset card {path} has no label_maps metadata ({", ".join(_REQUIRED)})')
    meta = check_map_info(data.get('label_maps'), f'dataset card {path}')
    meta.setdefault('license', data.get('license'))
    return meta


# -- a whole folder --------------------------------------------------------------------------

def write_maps_folder(
        output_dir: Union[str, os.PathLike],
        image_ids: Sequence[str],
        batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
        info: Dict[str, Any],
        shard_size: int = 10000,
        overwrite: bool = False,
        layout: int = LAYOUT_VERSION,
) -> Path:
    """Write a label-map dataset folder (Parquet shards + dataset card) from batches of maps.

    ``batches`` yields ``(scores [n, K, H, W], classes [n, K, H, W])`` for consecutive images of
    ``image_ids`` (in that order); ``info`` is the card's metadata (see ``write_dataset_card``; needs
    ``annotator``, ``input_size``, ``map_size``, ``topk``, ``dtype``, ``num_classes``). A folder that
    already holds maps is refused unless ``overwrite``. ``layout``: see ``write_shard``.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f'{out}: exists and is not a folder')
    if shard_size < 1:
        raise UserError(f'shard_size={shard_size}: must be >= 1')
    _check_layout(layout, (1, 1, 1))
    if out.is_dir() and (list_shards(str(out)) or (out / CARD_FILE).exists()):
        if not overwrite:
            raise UserError(f'{out} already holds label maps; pass overwrite=True to replace them')
        remove_map_files(str(out), everything=True)
    ids = list(image_ids)
    if not ids:
        raise UserError('label maps: no images to write')
    num_shards = math.ceil(len(ids) / shard_size)
    out.mkdir(parents=True, exist_ok=True)
    buf_s, buf_c, start, shard = [], [], 0, 0
    for scores, classes in batches:
        buf_s.append(scores)
        buf_c.append(classes)
        have = sum(len(s) for s in buf_s)
        while shard < num_shards and have >= min(shard_size, len(ids) - start):
            take = min(shard_size, len(ids) - start)
            s_all, c_all = torch.cat(buf_s), torch.cat(buf_c)
            write_shard(str(out), shard, num_shards, ids[start:start + take], s_all[:take], c_all[:take],
                        info['dtype'], int(info['num_classes']), layout)
            buf_s, buf_c = [s_all[take:]], [c_all[take:]]
            start, shard = start + take, shard + 1
            have -= take
    if shard != num_shards or sum(len(s) for s in buf_s):
        raise UserError(f'label maps: {len(ids)} image ids but the maps do not match them in number')
    write_dataset_card(str(out), info)
    return out


# -- Hub -------------------------------------------------------------------------------------

def push_maps(folder: str, repo_id: str, private: bool = False, token: Optional[str] = None,
              revision: Optional[str] = None, commit_message: Optional[str] = None) -> str:
    """Upload a label-map dataset folder (card + ``data/*.parquet``) as the dataset repo ``repo_id``;
    returns the commit URL. No network or no token -> ``UserError`` in one line."""
    info = read_map_info(folder)
    if not list_shards(folder):
        raise UserError(f'no shards ({SHARD_GLOB}) in {folder}')
    if constants.HF_HUB_OFFLINE:
        raise UserError(f'cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set')
    if info.get('repo_id') != repo_id:  # the card's loading snippets name the Hub repo
        write_dataset_card(folder, {**info, 'repo_id': repo_id})
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type='dataset', private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type='dataset', revision=revision,
            allow_patterns=[CARD_FILE, f'{DATA_DIR}/train-*.parquet'],
            delete_patterns=[f'{DATA_DIR}/train-*.parquet'],
            commit_message=commit_message or f'Upload label maps ({info["annotator"]}, {info.get("num_images")} images)')
    except Exception as e:  # noqa: BLE001 -- network, auth, permissions: one line for the CLI
        raise UserError(f'cannot push {folder} to the Hub dataset {repo_id}: {typed_error_line(e)}') from e
    return str(getattr(commit, 'commit_url', commit))
