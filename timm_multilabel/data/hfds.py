"""Hugging Face datasets for ``--dataset hfds/...``: the forms a ``datasets`` user writes, one-line errors.

``--dataset hfds/NAME`` (timm's prefix) loads one split as a map-style ``datasets.Dataset``:

* ``hfds/ORG/NAME`` (a Hub id) or ``hfds//path/to/folder`` (a local folder of data files: Parquet,
  Arrow, an image folder, ...): ``load_dataset(NAME, split=SPLIT, cache_dir=--data-dir)``, timm's
  meaning (``--data-dir`` is the datasets cache; without it, datasets' default cache).
* ``hfds//path/to/folder`` written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``:
  ``load_from_disk(path)[SPLIT]`` (a single ``Dataset`` only when its ``split`` is the one asked).
* ``hfds/imagefolder`` (or another packaged builder: ``parquet``, ``arrow``, ``webdataset``, ``csv``,
  ``json``) with ``--data-dir DIR``: ``load_dataset('imagefolder', data_dir=DIR, split=SPLIT)``, as a
  datasets user means it.

:class:`ReaderHfDataset` is timm's ``ReaderHfds`` (same items, targets, ``class_to_idx``, ``--class-map``,
``--input-key``/``--target-key`` meanings) on such a loaded split; rows whose single label a class
map leaves out are dropped, as timm's folder reader drops images of classes outside the map.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from timm.data.readers._hfds import get_class_labels, remote_code_kwargs
from timm.data.readers.class_map import load_class_map
from timm.data.readers.reader import Reader
from timm.data.readers.reader_hfds import ReaderHfds
from timm.data.readers.targets import (
    check_target_format, has_field, multi_field_class_to_idx, parse_target_keys)

from ..errors import UserError, hub_error_line

__all__ = ['PACKAGED_BUILDERS', 'load_hf_split', 'ReaderHfDataset', 'is_saved_to_disk']

PACKAGED_BUILDERS = ('imagefolder', 'parquet', 'arrow', 'webdataset', 'csv', 'json')
"""``hfds/<builder>`` names whose ``--data-dir`` is the folder of data files (``data_dir=``), not a cache."""


def is_saved_to_disk(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return os.path.isfile(os.path.join(path, 'dataset_dict.json')) or (
        os.path.isfile(os.path.join(path, 'state.json')) and os.path.isfile(os.path.join(path, 'dataset_info.json')))


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id (``org/name``)."""
    return name.startswith(('/', '.', '~'))


def load_hf_split(name: str, root: Optional[str], split: str, trust_remote_code: bool = False) -> Any:
    """One split of a Hugging Face dataset as a map-style ``datasets.Dataset`` (see the module docstring
    for the forms of ``name``, the part after ``hfds/``); any failure is a one-line ``UserError``."""
    import datasets

    where = f'--dataset hfds/{name}'
    try:
        extra = remote_code_kwargs(trust_remote_code)
    except ValueError:
        raise UserError(f'--dataset-trust-remote-code: datasets {datasets.__version__} has no loading scripts '
                        f'(removed in datasets 4.0); use a dataset of data files (Parquet, an image folder)') from None
    path = os.path.expanduser(name)
    if os.path.isdir(path) and is_saved_to_disk(path):
        try:
            loaded = datasets.load_from_disk(path)
        except Exception as e:  # noqa: BLE001 -- a damaged folder: say which and why, in one line
            raise UserError(f'{where}: cannot read this save_to_disk folder ({hub_error_line(e)})') from e
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f'{where}: no split {split!r} (splits: {", ".join(loaded)}); name the split with '
                                f'--train-split / --val-split')
            return loaded[split]
        if loaded.split is not None and str(loaded.split) == split:
            return loaded
        raise UserError(f'{where}: a single Dataset written by save_to_disk (split {loaded.split}), not split '
                        f'{split!r}; save a DatasetDict with one Dataset per split '
                        f'(DatasetDict(train=..., validation=...).save_to_disk(path))')
    if name.lower() in PACKAGED_BUILDERS:
        if not root:
            raise UserError(f'{where} needs --data-dir DIR, the folder of its files '
                            f'(load_dataset({name.lower()!r}, data_dir=DIR))')
        if not os.path.isdir(root):
            raise UserError(f'--data-dir {root}: no such directory')
        kwargs: Dict[str, Any] = dict(data_dir=root)
        name = name.lower()
    else:
        if _looks_like_path(name) and not os.path.exists(path):
            raise UserError(f'{where}: no such folder')
        if os.path.isfile(path):
            raise UserError(f'{where}: a file; name its folder (hfds/{os.path.dirname(name) or "."}) or use '
                            f'hfds/parquet --data-dir FOLDER')
        kwargs = dict(cache_dir=root) if root else {}
        name = path if os.path.isdir(path) else name
    try:
        return datasets.load_dataset(name, split=split, **kwargs, **extra)
    except Exception as e:  # noqa: BLE001 -- datasets raises many types; the user needs one line (the Hub's own message)
        message = hub_error_line(e)
        if 'Unknown split' in message or ('split' in message.lower() and 'should be one of' in message.lower()):
            raise UserError(f'{where}: no split {split!r} ({message}); name the split with '
                            f'--train-split / --val-split') from e
        raise UserError(f'{where}: cannot load ({type(e).__name__}: {message})') from e


class ReaderHfDataset(ReaderHfds):
    """timm's ``ReaderHfds`` over an already loaded ``datasets.Dataset`` (``load_hf_split``).

    Args:
        dataset: one split.
        name: what the user named (errors, ``root`` for messages).
        split: the split's name.
        class_map: timm's class map (file or ``{class name: index}``): targets are remapped through
            it; rows whose single label is not in the map are dropped.
        input_key: the image column (timm's default ``image``).
        target_key: the label column (timm's default ``label``), or comma-separated binary columns.
        target_format: timm's ``'indices'`` / ``'multihot'``.
        additional_features: extra columns returned after ``(image, target)``.
    """

    def __init__(
            self,
            dataset: Any,
            name: str = '',
            split: str = 'train',
            class_map: Any = None,
            input_key: Optional[str] = None,
            target_key: Optional[str] = None,
            target_format: Optional[str] = None,
            additional_features: Optional[List[str]] = None,
    ):
        import datasets

        Reader.__init__(self)  # not ReaderHfds.__init__: that one loads by name with the root as cache
        input_key = input_key or 'image'
        target_key = target_key or 'label'
        where = f'--dataset hfds/{name}'
        columns = list(dataset.column_names)
        if input_key not in columns:
            raise UserError(f'--input-key {input_key}: no such column in {where} (columns: {", ".join(columns)})')
        try:
            self.target_keys = parse_target_keys(target_key)
            self.dense_target = check_target_format(target_format, self.target_keys) == 'multihot'
        except ValueError as e:
            raise UserError(f'--target-key {target_key}: {e}') from None
        for key in self.target_keys or (target_key,):
            if not has_field(dataset.features, key):
                raise UserError(f'--target-key {key}: no such column in {where} (columns: {", ".join(columns)})')
        self.root = name
        self.split = split
        self.image_key = input_key
        self.label_key = target_key
        if self.target_keys:
            source_classes = multi_field_class_to_idx(self.target_keys, dataset.features)
        else:
            source_classes = get_class_labels(dataset.info, target_key)
        self._source_names = {index: cls for cls, index in source_classes.items()}
        self.remap_class = bool(class_map)
        self.class_to_idx = load_class_map(class_map) if class_map else source_classes
        try:
            self.dataset = dataset.cast_column(input_key, datasets.Image(decode=False))
        except Exception as e:  # noqa: BLE001
            raise UserError(f'--input-key {input_key}: column of {where} is not images ({hub_error_line(e)})') from e
        if self.remap_class and not self.target_keys and not self.dense_target:
            self._keep_mapped_rows(where)
        self.split_info = dataset.info.splits.get(split) if dataset.info.splits else None
        self.num_samples = len(self.dataset)
        if additional_features is None or isinstance(additional_features, list):
            self.additional_features = additional_features
        else:
            self.additional_features = [additional_features]

    def _keep_mapped_rows(self, where: str) -> None:
        """Drop the rows whose scalar label the class map leaves out (timm's folder reader drops such images)."""
        labels = self.dataset.remove_columns(self.image_key).with_format(None)[self.label_key]
        if labels and isinstance(labels[0], (list, tuple)):
            return  # multi-label rows: timm's remap applies per label
        keep = [i for i, label in enumerate(labels) if label in self.class_to_idx
                or self._source_names.get(label) in self.class_to_idx]
        if not keep:
            raise UserError(f'--class-map: none of its classes is a label of {where} split {self.split!r}')
        if len(keep) < len(labels):
            self.dataset = self.dataset.select(keep)
