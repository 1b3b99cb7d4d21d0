"""Random access to a label-map dataset by image id, memory-mapped.

``load_label_maps(folder_or_repo_id)`` reads the Parquet shards through 🤗 Datasets, whose
Arrow cache is memory-mapped: nothing is loaded whole into memory, lookups are numpy slices of
the mapped buffers (zero-copy) and only the requested maps are copied out. The store pickles
by reference (the Arrow cache files), so DataLoader workers, forked or spawned, reopen it
lazily and share the pages. Both shard layouts are read (``writer.LAYOUT_FIXED`` ``[K, H, W]``
arrays and the flat lists of folders written before them): both keep each map's K*H*W values
contiguous, so a lookup is the same slice.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import huggingface_hub
from huggingface_hub import constants
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ..errors import UserError, typed_error_line
from .maps import decode_scores
from .verify import check_shard_schema, verify_label_maps
from .writer import CARD_FILE, LAYOUT_FIXED, SHARD_GLOB, check_one_layout, list_shards, read_map_info

__all__ = ['LabelMapStore', 'load_label_maps', 'resolve_label_maps']

_logger = logging.getLogger(__name__)
_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


class LabelMapStore:
    """Label maps of a dataset folder, by image id.

    ``store[image_id] -> (scores [K, H, W] float32, classes [K, H, W] int64)``;
    ``store.get_batch(ids) -> (scores [N, K, H, W] float32, classes [N, K, H, W] int64)``.
    uint8 maps are dequantized. ``len(store)``, ``image_id in store``, ``store.missing(ids)``,
    ``store.image_ids``, ``store.num_classes``, ``store.topk``, ``store.map_size`` ``(H, W)``,
    ``store.dtype``, ``store.class_names``, ``store.info`` (the card's ``label_maps`` metadata).

    Args:
        folder: a label-map dataset folder (README.md + data/train-*.parquet).
        cache_dir: 🤗 Datasets cache for the Arrow files (default: the datasets cache).
    """

    def __init__(self, folder: str, cache_dir: Optional[str] = None):
        self.folder = str(folder)
        self.info: Dict[str, Any] = read_map_info(self.folder)
        self.topk = int(self.info['topk'])
        self.map_size: Tuple[int, int] = tuple(int(v) for v in self.info['map_size'])
        self.num_classes = int(self.info['num_classes'])
        self.dtype = str(self.info['dtype'])
        names = self.info.get('class_names')
        self.class_names: Optional[List[str]] = list(names) if names else None
        self._shape = (self.topk,) + self.map_size
        self._numel = int(np.prod(self._shape))
        self.layout = int(self.info['layout_version'])
        self._shards = list_shards(self.folder)
        if not self._shards:
            raise UserError(f'no shards ({SHARD_GLOB}) in {self.folder}')
        self._check_shards()
        self._ds = self._load(cache_dir)
        num = self.info.get('num_images')
        if num is not None and int(num) != len(self._ds):
            raise UserError(f'{self.folder}: the card lists {num} images, the shards hold {len(self._ds)}')
        self._index = None

    # -- opening ----------------------------------------------------------------------------

    def _check_shards(self) -> None:
        schemas = []
        for path in self._shards:
            try:
                schemas.append((path, pq.read_schema(path)))
            except Exception as e:  # noqa: BLE001
                raise UserError(f'unreadable label-map shard {path} ({typed_error_line(e)})') from e
        check_one_layout(self.folder, schemas)
        for path, schema in schemas:
            check_shard_schema(path, schema, self.info)

    def _load(self, cache_dir: Optional[str]):
        import datasets  # heavy; only when maps are opened
        try:
            return datasets.load_dataset('parquet', data_files={'train': self._shards}, split='train',
                                         cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 -- find the shard that breaks it
            for path in self._shards:
                try:
                    pq.read_table(path)
                except Exception as e2:  # noqa: BLE001
                    raise UserError(f'corrupt label-map shard {path} ({typed_error_line(e2)})') from e2
            raise UserError(f'cannot load the label maps in {self.folder} ({typed_error_line(e)})') from e

    def _build_index(self) -> Dict[str, Any]:
        table = self._ds.data.table
        id_col = table.column('image_id')
        if id_col.null_count:
            raise UserError(f'{self.folder}: {id_col.null_count} label map(s) have no image_id (null)')
        ids = np.array([s.encode('utf-8') for s in id_col.to_pylist()], dtype=bytes)
        order = None
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            order = np.argsort(ids, kind='stable')
            ids = ids[order]
            dup = np.nonzero(ids[1:] == ids[:-1])[0]
            if len(dup):
                raise UserError(f'{self.folder}: image id {ids[dup[0]].decode()!r} appears twice')
        index = {'ids': ids, 'order': order}
        for col in ('scores', 'classes'):
            views, starts = [], [0]
            for chunk in table.column(col).chunks:
                if self.layout == LAYOUT_FIXED:
                    flat = self._flatten_fixed(chunk, col, id_col, int(starts[-1]))
                else:
                    lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
                    flat = chunk.flatten()
                    if chunk.null_count or flat.null_count or (lengths != self._numel).any():
                        bad = np.flatnonzero(np.isnan(lengths.astype(np.float64)) | (lengths != self._numel))
                        row = int(bad[0]) if len(bad) else 0
                        raise self._bad_row(col, id_col, int(starts[-1]) + row)
                flat = flat.to_numpy(zero_copy_only=False)
                views.append(flat.reshape(len(chunk), self._numel))
                starts.append(starts[-1] + len(chunk))
            index[col] = (views, np.asarray(starts, dtype=np.int64))
        if self.dtype == 'uint8':
            index['offset'] = table.column('offset').to_numpy()
            index['scale'] = table.column('scale').to_numpy()
        return index

    def _bad_row(self, col: str, id_col, row: int) -> UserError:
        return UserError(f'{self.folder}: the {col} of image {id_col[row].as_py()!r} are not a {self._shape} map '
                         f'(null values or a row of another length)')

    def _flatten_fixed(self, chunk, col: str, id_col, row0: int):
        """The values of a ``[K, H, W]`` fixed-size-list chunk, zero-copy; nulls at any level refused."""
        arr, per_row = chunk, 1  # per_row: elements of arr per map
        for d in self._shape:
            if not pa.types.is_fixed_size_list(arr.type):  # the datasets cache keeps the shards' type
                raise UserError(f'{self.folder}: the {col} column is {chunk.type}, not {self._shape} arrays')
            if arr.null_count:
                first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise self._bad_row(col, id_col, row0 + first // per_row)
            arr, per_row = arr.flatten(), per_row * d
        if arr.null_count:
            first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._bad_row(col, id_col, row0 + first // per_row)
        return arr

    @property
    def _idx(self) -> Dict[str, Any]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_index'] = None  # numpy views of the memory map: rebuilt in the worker
        return state

    # -- lookups ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ds)

    def __repr__(self) -> str:
        return (f'LabelMapStore({self.folder!r}, images={len(self)}, annotator={self.info.get("annotator")!r}, '
                f'topk={self.topk}, map_size={self.map_size}, dtype={self.dtype}, num_classes={self.num_classes})')

    def _find(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row of each id, -1 where absent."""
        ids = self._idx['ids']
        keys = np.array([str(i).encode('utf-8') for i in image_ids], dtype=bytes) if len(image_ids) else \
            np.zeros(0, dtype=bytes)
        pos = np.searchsorted(ids, keys)
        pos_c = np.minimum(pos, len(ids) - 1)
        found = (pos < len(ids)) & (ids[pos_c] == keys) if len(ids) else np.zeros(len(keys), bool)
        order = self._idx['order']
        rows = order[pos_c] if order is not None else pos_c
        return np.where(found, rows, -1)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and bool(self._find([image_id])[0] >= 0)

    def missing(self, image_ids: Sequence[str]) -> List[str]:
        """The ids of ``image_ids`` that have no map, in the given order."""
        rows = self._find(list(image_ids))
        return [i for i, r in zip(image_ids, rows) if r < 0]

    @property
    def image_ids(self) -> List[str]:
        """All image ids (sorted)."""
        return [i.decode('utf-8') for i in self._idx['ids']]

    def _gather(self, col: str, rows: np.ndarray) -> np.ndarray:
        views, starts = self._idx[col]
        out = np.empty((len(rows), self._numel), dtype=views[0].dtype if views else np.float32)
        chunk = np.searchsorted(starts, rows, side='right') - 1
        local = rows - starts[chunk]
        for c in np.unique(chunk):
            sel = chunk == c
            out[sel] = views[c][local[sel]]
        return out

    def get_batch(self, image_ids: Sequence[str]) -> Tuple[Tensor, Tensor]:
        """Maps of ``image_ids`` (N): ``scores [N, K, H, W]`` float32, ``classes [N, K, H, W]`` int64.
        An id without a map raises ``KeyError`` naming it."""
        image_ids = list(image_ids)
        rows = self._find(image_ids)
        if (rows < 0).any():
            bad = [i for i, r in zip(image_ids, rows) if r < 0]
            raise KeyError(f'{len(bad)} image id(s) have no label map in {self.folder}, e.g. {bad[0]!r}')
        stored = self._gather('scores', rows)
        if self.dtype == 'uint8':
            scores = decode_scores(stored, self._idx['offset'][rows], self._idx['scale'][rows])
        else:
            scores = decode_scores(stored)
        classes = self._gather('classes', rows).astype(np.int64)
        shape = (len(rows),) + self._shape
        return torch.from_numpy(scores.reshape(shape)), torch.from_numpy(classes.reshape(shape))

    def _row(self, image_id: str) -> int:
        idx = self._idx
        ids = idx['ids']
        key = str(image_id).encode('utf-8')
        pos = int(ids.searchsorted(key))
        if pos >= len(ids) or ids[pos] != key:
            raise KeyError(f'image id {image_id!r} has no label map in {self.folder}')
        return pos if idx['order'] is None else int(idx['order'][pos])

    def _one(self, col: str, row: int) -> np.ndarray:
        views, starts = self._idx[col]
        c = int(starts.searchsorted(row, side='right')) - 1
        return views[c][row - int(starts[c])]

    def __getitem__(self, image_id: str) -> Tuple[Tensor, Tensor]:
        """``(scores [K, H, W] float32, classes [K, H, W] int64)`` of one image."""
        row = self._row(image_id)
        stored = self._one('scores', row)
        if self.dtype == 'uint8':
            scores = self._idx['scale'][row] * stored.astype(np.float32) + self._idx['offset'][row]
        else:
            scores = stored.astype(np.float32)
        classes = self._one('classes', row).astype(np.int64)
        return torch.from_numpy(scores.reshape(self._shape)), torch.from_numpy(classes.reshape(self._shape))


def _hub_or_folder_error(where: str, repo_id: str, e: BaseException) -> UserError:
    name = type(e).__name__
    if constants.HF_HUB_OFFLINE or name == 'OfflineModeIsEnabled':
        return UserError(f'{where}: no such folder, and no Hub dataset {repo_id} in the offline cache '
                         f'(HF_HUB_OFFLINE is set)')
    if name in ('RepositoryNotFoundError', 'GatedRepoError', 'RevisionNotFoundError'):
        return UserError(f'{where}: no such folder, and no Hub dataset {repo_id} you can read ({typed_error_line(e)})')
    if name == 'LocalEntryNotFoundError':
        return UserError(f'{where}: no such folder, and the Hub dataset {repo_id} is neither in the local cache '
                         f'nor downloadable (no network?)')
    return UserError(f'{where}: no such folder, and cannot download the Hub dataset {repo_id} ({typed_error_line(e)})')


def resolve_label_maps(
        path_or_repo_id: str,
        revision: Optional[str] = None,
        token: Optional[str] = None,
        arg_name: Optional[str] = None,
) -> str:
    """The local folder of a label-map dataset: ``path_or_repo_id`` itself when it is a folder,
    else the snapshot of the Hub dataset repo ``org/name`` (card and shards only).

    What is a path: anything that starts with ``.``, ``/`` or ``~``, has more than one ``/`` or
    other characters a Hub id cannot hold, or whose first component is an existing folder
    (``maps/lite0`` when ``maps/`` exists). Those that do not exist are refused in one line
    (``--relabel-maps maps/lite0: no such folder (...)``, with a close match if there is one);
    only a bare ``org/name`` goes to the Hub. ``arg_name`` names the flag in messages.
    """
    raw = str(path_or_repo_id)
    path = os.path.expanduser(raw)
    if os.path.isdir(path):
        return path
    where = f'{arg_name} {raw}' if arg_name else f'label maps {raw}'
    if os.path.exists(path):
        raise UserError(f'{where}: is a file; expected a label-map dataset folder (README.md + {SHARD_GLOB})')
    absolute = os.path.abspath(path)
    local = f'{where}: no such folder (no label-map dataset folder at {absolute})'
    parent = os.path.dirname(absolute)
    if not _REPO_ID.match(raw) or os.path.isdir(raw.split('/')[0]):
        if os.path.isdir(parent):
            try:
                near = difflib.get_close_matches(os.path.basename(absolute), os.listdir(parent), n=1, cutoff=0.75)
            except OSError:
                near = []
            if near:
                local += f'; did you mean {os.path.join(os.path.dirname(raw), near[0])}?'
        raise UserError(local)
    try:
        return huggingface_hub.snapshot_download(repo_id=raw, repo_type='dataset', revision=revision, token=token,
                                                 allow_patterns=[CARD_FILE, 'data/*.parquet'])
    except Exception as e:  # noqa: BLE001 -- offline, missing repo, auth
        raise _hub_or_folder_error(where, raw, e) from e


def load_label_maps(
        path_or_repo_id: str,
        revision: Optional[str] = None,
        cache_dir: Optional[str] = None,
        token: Optional[str] = None,
        verify: bool = True,
        num_classes: Optional[int] = None,
        arg_name: Optional[str] = None,
        progress: bool = True,
) -> LabelMapStore:
    """Open a label-map dataset: a local folder, or a Hub dataset repo ``org/name``
    (downloaded with ``huggingface_hub.snapshot_download``, card and shards only; see
    :func:`resolve_label_maps` for what counts as a path).

    With ``verify`` (default) the whole dataset is checked first by
    :func:`~timm_multilabel.relabel.verify.verify_label_maps` (finite scores, class ids below the
    card's and ``num_classes``, row lengths, duplicate ids, card field types); a folder that passed
    is not rescanned while its shards are unchanged. Problems are ``UserError`` lines.
    """
    folder = resolve_label_maps(path_or_repo_id, revision=revision, token=token, arg_name=arg_name)
    if verify:
        verify_label_maps(folder, num_classes=num_classes, progress=progress)
    return LabelMapStore(folder, cache_dir=cache_dir)
