"""Pre-flight check of a whole label-map dataset, before any training: ``verify_label_maps``.

The store reads maps lazily, so a bad value would otherwise surface hours into a run (a NaN
target at the first batch that holds it, an out-of-range class id as an index error). This
module reads every shard once, row group by row group, and checks with pyarrow / numpy
reductions over whole columns (no Python loop per row):

* the card's ``label_maps`` fields and their types (``writer.check_map_info``);
* each shard's columns and their Arrow types (the card's dtype and class-id dtype, the card's
  layout: fixed-shape ``[K, H, W]`` arrays of the card's shape, or flat lists in folders written
  before them); shards in two layouts in one folder are refused;
* no null ``image_id``, no image id twice in the dataset, row count equal to the card's
  ``num_images``;
* every row's ``scores`` and ``classes`` hold exactly K*H*W values, none null (fixed-shape arrays
  have their shape in the Arrow type; flat lists are checked row by row);
* scores finite (float16 / float32), or for uint8 a finite ``offset`` and ``scale >= 0`` whose
  decoded scores ``offset + scale * q`` are finite for every code ``q``;
* class ids within ``[0, num_classes)`` of the card, and the card's classes no more than the
  model's.

The first problem is raised as one ``UserError`` line naming the shard file, the first offending
image id and what is wrong. A dataset that passed is remembered: a small JSON file keyed by the
shard names, sizes and mtimes, the card's, and the model's class count, kept in the maps folder
(``.label_maps_verified.json``) or, where that folder cannot be written (read-only, or a Hub
snapshot in the Hugging Face cache), under ``$TIMM_MULTILABEL_CACHE`` (default
``~/.cache/timm_multilabel``). Touching or replacing a shard invalidates it; failing to write it
is never an error.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from huggingface_hub import constants
from tqdm import tqdm

from ..errors import UserError
from ..fileio import write_json
from .writer import (
    CARD_FILE, LAYOUT_FIXED, LAYOUT_FLAT, LAYOUT_NAMES, SHARD_GLOB, VERIFIED_FILE, check_one_layout, list_shards,
    map_schema, read_map_info, shard_layout,
)

__all__ = ['verify_label_maps', 'check_shard_schema', 'verified_cache_paths', 'VERIFY_VERSION']

_logger = logging.getLogger(__name__)

VERIFY_VERSION = 2  # bump when the checks change: older cache entries are then ignored
_MAX_ENTRIES = 16   # fingerprints remembered per folder (e.g. several models' class counts)


def _first_line(e: BaseException) -> str:
    text = ' '.join(str(e).split())[:300]
    return f'{type(e).__name__}: {text}' if text else type(e).__name__


def map_shape(info: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(K, H, W)`` of the card's metadata."""
    return (int(info['topk']),) + tuple(int(v) for v in info['map_size'])


def check_shard_schema(path: str, schema: pa.Schema, info: Dict[str, Any]) -> None:
    """Refuse a shard whose layout, map shape, columns or column types differ from what the card
    (``info``: ``read_map_info``) declares; one line."""
    dtype, num_classes, layout = info['dtype'], int(info['num_classes']), info.get('layout_version', LAYOUT_FLAT)
    shape = map_shape(info)
    got_layout, got_shape = shard_layout(schema)
    if got_layout is not None and got_layout != layout:
        raise UserError(f'label-map shard {path} is in {LAYOUT_NAMES[got_layout]}, the card says '
                        f'{LAYOUT_NAMES[layout]}')
    if got_layout == LAYOUT_FIXED and got_shape != shape:
        raise UserError(f'label-map shard {path}: maps of shape {list(got_shape)}, the card\'s topk and map_size '
                        f'say [K, H, W] = {list(shape)}')
    want = map_schema(dtype, num_classes, layout, shape)
    for field in want:
        if field.name not in schema.names or not schema.field(field.name).type.equals(field.type):
            got = schema.field(field.name).type if field.name in schema.names else 'missing'
            raise UserError(f'label-map shard {path}: column {field.name!r} is {got}, '
                            f'the card ({dtype}, {num_classes} classes) needs {field.type}')


# -- the cache -------------------------------------------------------------------------------

def _user_cache_dir() -> str:
    root = os.environ.get('TIMM_MULTILABEL_CACHE')
    if not root:
        base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(base, 'timm_multilabel')
    return os.path.join(root, 'verified-maps')


def _in_hf_cache(folder: str) -> bool:
    real = os.path.realpath(folder)
    for root in (constants.HF_HUB_CACHE, getattr(constants, 'HF_HOME', None)):
        if root and (real + os.sep).startswith(os.path.realpath(root) + os.sep):
            return True
    return False


def verified_cache_paths(folder: str) -> List[str]:
    """Where a verified fingerprint of ``folder`` may be kept: the folder itself (unless it is
    read-only or a Hub snapshot), then the user cache."""
    key = hashlib.sha256(os.path.realpath(folder).encode('utf-8', 'surrogateescape')).hexdigest()[:24]
    user = os.path.join(_user_cache_dir(), f'{key}.json')
    if _in_hf_cache(folder) or not os.access(folder, os.W_OK):
        return [user]
    return [os.path.join(folder, VERIFIED_FILE), user]


def _fingerprint(folder: str, shards: Sequence[str], num_classes: Optional[int]) -> str:
    def stat(p: str) -> List[Any]:
        st = os.stat(p)
        return [os.path.basename(p), st.st_size, st.st_mtime_ns]

    key = {'version': VERIFY_VERSION, 'card': stat(os.path.join(folder, CARD_FILE)),
           'shards': [stat(p) for p in shards], 'num_classes': num_classes}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_cache(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        return data if isinstance(data, dict) and isinstance(data.get('verified'), dict) else {}
    except (OSError, ValueError):
        return {}


def _is_cached(folder: str, fingerprint: str) -> bool:
    return any(fingerprint in _read_cache(p).get('verified', {}) for p in verified_cache_paths(folder))


def _remember(folder: str, fingerprint: str, summary: Dict[str, Any]) -> None:
    for path in verified_cache_paths(folder):
        entries = dict(_read_cache(path).get('verified', {}))
        entries.pop(fingerprint, None)
        entries[fingerprint] = summary
        entries = dict(list(entries.items())[-_MAX_ENTRIES:])
        try:
            write_json(path, {'folder': os.path.realpath(folder), 'verified': entries})
            return
        except OSError as e:  # read-only folder, full disk, no home: try the next place, never fail
            _logger.debug('cannot cache the label-map check in %s (%s)', path, e)


# -- the checks ------------------------------------------------------------------------------

class _Shard:
    """Checks of one shard, a row group at a time; ``ids`` collects its image ids."""

    def __init__(self, path: str, info: Dict[str, Any]):
        self.path = path
        self.dtype = info['dtype']
        self.num_classes = int(info['num_classes'])
        self.shape = map_shape(info)
        self.numel = int(np.prod(self.shape))
        self.fixed = info.get('layout_version', LAYOUT_FLAT) == LAYOUT_FIXED
        self.ids: List[pa.Array] = []
        self._row0 = 0  # shard row of the row group being checked

    def fail(self, ids: pa.Array, row: int, what: str) -> UserError:
        image_id = ids[int(row)].as_py()
        return UserError(f'label-map shard {self.path}: image {image_id!r} (row {self._row0 + int(row)}) {what}')

    def check(self, table: pa.Table, row0: int) -> None:
        self._row0 = row0
        ids = table.column('image_id').combine_chunks()
        if ids.null_count:
            row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f'label-map shard {self.path}: row {row0 + row} has no image_id (null)')
        self.ids.append(ids)
        n = len(ids)
        values = {}
        for col in ('scores', 'classes'):
            arr = table.column(col).combine_chunks()
            if arr.null_count:
                row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise self.fail(ids, row, f'has no {col} (null)')
            if self.fixed:  # the shape is the Arrow type's: only nulls inside can be wrong
                per_row = 1
                for d in self.shape:
                    arr, per_row = arr.flatten(), per_row * d
                    if arr.null_count:
                        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) // per_row
                        raise self.fail(ids, row, f'has null {col} values')
                values[col] = arr.to_numpy(zero_copy_only=False).reshape(n, self.numel)
                continue
            lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            wrong = lengths != self.numel
            if wrong.any():
                row = int(np.argmax(wrong))
                k, h, w = self.shape
                raise self.fail(ids, row, f'has {int(lengths[row])} {col}, not K*H*W = {k}*{h}*{w} = {self.numel} '
                                f'(the card\'s topk and map_size)')
            flat = arr.flatten()
            if flat.null_count:
                row = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // self.numel
                raise self.fail(ids, row, f'has null {col} values')
            values[col] = flat.to_numpy(zero_copy_only=False).reshape(n, self.numel)
        self._scores(table, ids, values['scores'])
        self._classes(ids, values['classes'])

    def _scores(self, table: pa.Table, ids: pa.Array, scores: np.ndarray) -> None:
        if self.dtype == 'float16':
            # exponent bits all ones: inf or NaN (numpy's float16 isfinite is a slow software loop)
            bits = scores.view(np.uint16) & np.uint16(0x7C00)
            bad = bits == np.uint16(0x7C00)
            if bad.any():
                raise self.fail(ids, int(np.argmax(bad.any(1))), 'has NaN or inf scores')
        elif self.dtype == 'float32':
            if not np.isfinite(scores).all():
                raise self.fail(ids, int(np.argmax(~np.isfinite(scores).all(1))), 'has NaN or inf scores')
        else:  # uint8 codes: any code decodes finitely iff offset and offset + 255 * scale are finite
            for col in ('offset', 'scale'):
                arr = table.column(col).combine_chunks()
                if arr.null_count:
                    row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                    raise self.fail(ids, row, f'has no uint8 {col} (null)')
            offset = table.column('offset').to_numpy().astype(np.float32)
            scale = table.column('scale').to_numpy().astype(np.float32)
            with np.errstate(over='ignore', invalid='ignore'):
                top = offset + scale * np.float32(255.0)
            bad = ~(np.isfinite(offset) & np.isfinite(scale) & np.isfinite(top))
            if bad.any():
                row = int(np.argmax(bad))
                raise self.fail(ids, row, f'has uint8 offset {offset[row]} / scale {scale[row]} that decode to '
                                f'NaN or inf scores')
            neg = scale < 0
            if neg.any():
                row = int(np.argmax(neg))
                raise self.fail(ids, row, f'has a negative uint8 scale {scale[row]} (scores must decode as '
                                f'offset + scale * q, scale >= 0)')

    def _classes(self, ids: pa.Array, classes: np.ndarray) -> None:
        if classes.size == 0:
            return
        lo = 0 if classes.dtype == np.uint8 else int(classes.min())
        hi = int(classes.max())
        if lo < 0 or hi >= self.num_classes:
            bad = (classes >= self.num_classes).any(1)
            if lo < 0:
                bad |= (classes < 0).any(1)
            row = int(np.argmax(bad))
            vals = classes[row]
            v = int(vals[(vals < 0) | (vals >= self.num_classes)][0])
            raise self.fail(ids, row, f'has class id {v}, outside [0, {self.num_classes}) '
                            f'(the card\'s num_classes)')


def _read_shard(path: str, info: Dict[str, Any]) -> Iterator[pa.Table]:
    """The row groups of one shard (schema checked first), read on the calling thread."""
    pf = pq.ParquetFile(path)
    check_shard_schema(path, pf.schema_arrow, info)
    for g in range(pf.num_row_groups):
        yield pf.read_row_group(g, use_threads=False)


def _check_duplicates(folder: str, shards: Sequence[_Shard]) -> None:
    chunks = [a for s in shards for a in s.ids]
    if not chunks:
        return
    all_ids = pa.chunked_array(chunks, type=pa.string())
    if len(pc.unique(all_ids)) == len(all_ids):
        return
    counts = pc.value_counts(all_ids)
    dup = counts.filter(pc.greater(counts.field('counts'), 1))[0]['values'].as_py()
    where = [s.path for s in shards if any(pc.any(pc.equal(a, dup)).as_py() for a in s.ids)]
    shown = where[0] if len(where) == 1 else f'{where[0]} and {where[1]}'
    raise UserError(f'label maps {folder}: image id {dup!r} appears twice (in {shown}); '
                    f'each image needs exactly one map')


def verify_label_maps(
        folder: str,
        num_classes: Optional[int] = None,
        progress: bool = True,
        use_cache: bool = True,
) -> Dict[str, Any]:
    """Check a whole label-map dataset folder before training; ``UserError`` (one line) if anything is wrong.

    Args:
        folder: a label-map dataset folder (``README.md`` + ``data/train-*.parquet``), e.g. a Hub
            snapshot that ``load_label_maps`` downloaded.
        num_classes: the model's class count C; the card's ``num_classes`` must not exceed it
            (class ids are checked against the card's count, so against C too).
        progress: a tqdm bar over the shards (on terminals only).
        use_cache: skip the scan when this folder, with the same shards, card and ``num_classes``,
            already passed; remember a pass.

    Returns:
        ``{'num_images', 'num_shards', 'cached'}`` (``cached``: no shard was read).
    """
    folder = str(folder)
    info = read_map_info(folder)  # the card's fields and their types
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
            raise UserError(f'verify_label_maps: num_classes must be a positive int, got {num_classes!r}')
        num_classes = int(num_classes)
        declared = int(info['num_classes'])
        if declared > num_classes:
            raise UserError(f'label maps have {declared} classes (ids up to {declared - 1}) but the model has '
                            f'{num_classes}: map class ids must index the model\'s classes')
    paths = list_shards(folder)
    if not paths:
        raise UserError(f'no shards ({SHARD_GLOB}) in {folder}')
    fingerprint = _fingerprint(folder, paths, num_classes) if use_cache else ''
    if use_cache and _is_cached(folder, fingerprint):
        return {'num_images': info.get('num_images'), 'num_shards': len(paths), 'cached': True}
    schemas = []
    for path in paths:  # footers only: two layouts in one folder are refused before any shard is read
        try:
            schemas.append((path, pq.read_schema(path)))
        except Exception as e:  # noqa: BLE001
            raise UserError(f'corrupt label-map shard {path} ({_first_line(e)})') from e
    check_one_layout(folder, schemas)

    shards, total = [], 0
    for path in tqdm(paths, desc='verifying label maps', unit='shard', disable=None if progress else True,
                     leave=False):
        shard = _Shard(path, info)
        try:
            row0 = 0
            for table in _read_shard(path, info):
                shard.check(table, row0)
                row0 += table.num_rows
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 -- truncated, garbled, unreadable: name the shard
            raise UserError(f'corrupt label-map shard {path} ({_first_line(e)})') from e
        total += row0
        shards.append(shard)
    if total == 0:
        raise UserError(f'label maps {folder}: the shards hold no maps')
    num = info.get('num_images')
    if num is not None and int(num) != total:
        raise UserError(f'label maps {folder}: the card lists {num} images, the shards hold {total}')
    _check_duplicates(folder, shards)
    summary = {'num_images': total, 'num_shards': len(paths), 'cached': False}
    if use_cache:
        _remember(folder, fingerprint, {'num_images': total, 'num_classes': num_classes})
    return summary
