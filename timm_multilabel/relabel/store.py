"""Random access to a label-map dataset by image id, memory-mapped.

``load_label_maps(folder_or_repo_id)`` reads the Parquet shards through 🤗 Datasets, whose
Arrow cache is memory-mapped: nothing is loaded whole into memory, lookups are numpy slices of
the mapped buffers (zero-copy) and only the requested maps are copied out. The store pickles
by reference (the Arrow cache files), so DataLoader workers, forked or spawned, reopen it
lazily and share the pages.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ..errors import UserError
from .maps import decode_scores
from .writer import SHARD_GLOB, list_shards, map_schema, read_map_info

__all__ = ['LabelMapStore', 'load_label_maps']

_logger = logging.getLogger(__name__)
_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f'{type(e).__name__}: {text.splitlines()[0]}' if text else type(e).__name__


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
        want = map_schema(self.dtype, self.num_classes)
        for path in self._shards:
            try:
                schema = pq.read_schema(path)
            except Exception as e:  # noqa: BLE001
                raise UserError(f'unreadable label-map shard {path} ({_first_line(e)})') from e
            for field in want:
                if field.name not in schema.names or not schema.field(field.name).type.equals(field.type):
                    got = schema.field(field.name).type if field.name in schema.names else 'missing'
                    raise UserError(f'label-map shard {path}: column {field.name!r} is {got}, '
                                    f'the card ({self.dtype}, {self.num_classes} classes) needs {field.type}')

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
                    raise UserError(f'corrupt label-map shard {path} ({_first_line(e2)})') from e2
            raise UserError(f'cannot load the label maps in {self.folder} ({_first_line(e)})') from e

    def _build_index(self) -> Dict[str, Any]:
        table = self._ds.data.table
        ids = np.array([s.encode('utf-8') for s in table.column('image_id').to_pylist()], dtype=bytes)
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
                flat = chunk.flatten().to_numpy(zero_copy_only=False)
                if flat.size != len(chunk) * self._numel:
                    raise UserError(f'{self.folder}: {col} rows are not {self._shape} maps')
                views.append(flat.reshape(len(chunk), self._numel))
                starts.append(starts[-1] + len(chunk))
            index[col] = (views, np.asarray(starts, dtype=np.int64))
        if self.dtype == 'uint8':
            index['offset'] = table.column('offset').to_numpy()
            index['scale'] = table.column('scale').to_numpy()
        return index

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


def load_label_maps(
        path_or_repo_id: str,
        revision: Optional[str] = None,
        cache_dir: Optional[str] = None,
        token: Optional[str] = None,
) -> LabelMapStore:
    """Open a label-map dataset: a local folder, or a Hub dataset repo ``org/name``
    (downloaded with ``huggingface_hub.snapshot_download``, card and shards only)."""
    path = os.path.expanduser(str(path_or_repo_id))
    if os.path.isdir(path):
        return LabelMapStore(path, cache_dir=cache_dir)
    if os.path.exists(path) or not _REPO_ID.match(str(path_or_repo_id)):
        raise UserError(f'no label-map dataset folder at {path_or_repo_id}')
    try:
        folder = huggingface_hub.snapshot_download(repo_id=str(path_or_repo_id), repo_type='dataset', revision=revision,
                                   token=token, allow_patterns=['README.md', 'data/*.parquet'])
    except Exception as e:  # noqa: BLE001 -- offline, missing repo, auth
        raise UserError(f'cannot download the label-map dataset {path_or_repo_id} from the Hub '
                        f'({_first_line(e)})') from e
    return LabelMapStore(folder, cache_dir=cache_dir)
