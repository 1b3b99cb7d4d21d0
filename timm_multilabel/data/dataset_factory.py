"""Dataset factory: the built-in digits-grid, else timm's ``create_dataset``; plus per-sample image ids.

Image ids (``get_image_ids``) are the keys of label maps (see DESIGN.md, "Label-map dataset"):

* ``DigitsGrid``: its ``image_ids`` (``'train/000123'``).
* timm ``ImageDataset`` on a folder (or torchvision ``ImageFolder``): the file's path relative to the
  (split) root, without extension, with '/' separators, e.g. ``'n01440764/n01440764_10026'``.

Folders, tar files and ``hfds/`` datasets come back as :class:`~timm_multilabel.data.bad_images.CheckedImageDataset`
(timm's ``ImageDataset`` that raises ``BadImageError`` on an image it cannot decode, or skips it when
asked, instead of returning the next sample); folders are listed by
:class:`~timm_multilabel.data.listing.SafeReaderImageFolder` (timm's reader, each symlinked folder
followed at most once).
* timm ``ImageDataset`` on a Hugging Face dataset (``hfds/...``): the ``image_id`` column if present,
  else ``id``, else the row index as a string.
* other readers with file names (e.g. tar): the relative file name without extension;
  anything else: the index as a string.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional

import timm.data
from timm.data.readers.reader_image_folder import ReaderImageFolder
import torch.utils.data

from ..errors import UserError
from .bad_images import CheckedImageDataset
from .digits_grid import DigitsGrid
from .digits_main import DigitsMain
from .listing import SafeReaderImageFolder

__all__ = ['create_dataset', 'get_image_ids', 'get_real_labels', 'get_num_classes', 'get_class_names']

DIGITS_GRID_NAMES = ('digits-grid', 'digits_grid', 'digitsgrid')
DIGITS_MAIN_NAMES = ('digits-main', 'digits_main', 'digitsmain')
_FOLDER_NAMES = ('', 'folder', 'imagefolder', 'image_folder')
_TRAIN_SYNONYMS = ('train', 'training')  # timm's dataset_factory synonyms, in its order
_EVAL_SYNONYMS = ('val', 'valid', 'validation', 'eval', 'evaluation')
# timm create_dataset arguments that mean nothing for digits-grid (dropped, not passed on)
_TIMM_ONLY_KWARGS = (
    'search_split', 'class_map', 'load_bytes', 'download', 'batch_size', 'repeats',
    'input_img_mode', 'trust_remote_code', 'input_key', 'target_key',
)


def _digits_split(split: str) -> str:
    """'train' (and timm's train synonyms) -> 'train'; anything else ('validation', 'val', 'test') -> 'test'."""
    return 'train' if str(split).lower() in ('train', 'training') else 'test'


def create_dataset(
        name: str,
        root: Optional[str] = None,
        split: str = 'train',
        is_training: bool = False,
        seed: int = 0,
        transform: Optional[Callable] = None,
        num_samples: Optional[int] = None,
        skip_bad_images: bool = False,
        skip_log: Optional[os.PathLike] = None,
        **kwargs,
) -> torch.utils.data.Dataset:
    """Create a dataset by name (train.py's ``--dataset``, ``--data-dir``, ``--train-split``/``--val-split``).

    Args:
        name: 'digits-grid' for the built-in grids; otherwise a timm dataset name: '' / 'imagefolder'
            (folder or tar at ``root``), 'hfds/<hub name or local folder>', 'torch/<name>', ...
        root: data folder (timm's ``--data-dir``); ignored by digits-grid.
        split: 'train' -> digits-grid train grids, anything else -> test grids; passed on to timm.
        is_training: passed on to timm (iterable datasets shuffle).
        seed: digits-grid generation seed; timm's seed for iterable datasets.
        transform: set as the dataset's ``transform``.
        num_samples: digits-grid size (default 10000 / 2000); passed on to timm's iterable datasets.
        skip_bad_images: for image datasets (folder, tar, ``hfds/``): an image that cannot be decoded
            is ``None`` (drop it with ``bad_images.drop_missing``) instead of raising ``BadImageError``.
        skip_log: file that lists each skipped image once (one path a line).
        **kwargs: DigitsGrid options (``cell_size``, ``grid``, ``center_prob``, ``target_transform``, ...)
            or timm ``create_dataset`` options (``class_map``, ``input_img_mode``, ...).
    """
    name = name or ''
    if name.lower() in DIGITS_GRID_NAMES + DIGITS_MAIN_NAMES:
        dg_kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY_KWARGS}
        cls = DigitsGrid if name.lower() in DIGITS_GRID_NAMES else DigitsMain
        try:
            return cls(
                split=_digits_split(split), num_samples=num_samples, seed=seed, transform=transform, **dg_kwargs)
        except TypeError as e:
            raise UserError(f'--dataset {name}: {e}') from None

    prefix, sep, _ = name.partition('/')
    prefix = prefix.lower() if sep else ''
    if prefix in ('', 'torch'):
        if name.lower() in _FOLDER_NAMES:
            name = ''
        if root is None or root == '':
            raise UserError(f'--dataset {name or "(folder)"}: --data-dir is required')
        if not os.path.exists(root) and not (prefix == 'torch' and kwargs.get('download')):
            raise UserError(f'--data-dir {root}: no such directory')
    try:
        if prefix == '' and os.path.isdir(root):
            ds = _folder_dataset(root, split, **kwargs)
        else:
            ds = timm.data.create_dataset(
                name, root=root, split=split, is_training=is_training, seed=seed,
                num_samples=num_samples, **kwargs)
    except RuntimeError as e:
        if 'Found 0 images' in str(e):
            raise UserError(f'--data-dir {root}: no images found (split {split!r})') from None
        raise
    if isinstance(ds, CheckedImageDataset):
        ds.skip_bad_images = bool(skip_bad_images)
        ds.skip_log = type(ds.skip_log)(skip_log)
    elif type(ds) is timm.data.ImageDataset:
        ds = CheckedImageDataset.from_dataset(ds, skip_bad_images=skip_bad_images, skip_log=skip_log)
    if transform is not None:
        ds.transform = transform
    return ds


def image_folder_root(dataset: Any) -> Optional[str]:
    """The folder an image-folder dataset reads (its split sub-folder), else None (other readers:
    a Hugging Face or tar reader's ``root`` is a cache or archive, not the images' folder)."""
    reader = getattr(dataset, 'reader', None)
    if not isinstance(reader, ReaderImageFolder) or not os.path.isdir(reader.root):
        return None
    return os.path.realpath(reader.root)


def _search_split(root: str, split: str) -> str:
    """timm's split sub-folder search: ``root/<split>``, else a synonym (train/training,
    val/valid/validation/eval/evaluation), else ``root``."""
    split_name = split.split('[')[0]
    if os.path.exists(os.path.join(root, split_name)):
        return os.path.join(root, split_name)
    for synonyms in (_TRAIN_SYNONYMS, _EVAL_SYNONYMS):
        if split_name in synonyms:
            for s in synonyms:
                if os.path.exists(os.path.join(root, s)):
                    return os.path.join(root, s)
    return root


def _folder_dataset(
        root: str,
        split: str,
        search_split: bool = True,
        class_map: Any = None,
        load_bytes: bool = False,
        input_img_mode: str = 'RGB',
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        download: bool = False,
        batch_size: int = 1,
        repeats: int = 0,
        trust_remote_code: bool = False,
        **reader_kwargs,
) -> CheckedImageDataset:
    """What timm's ``create_dataset('', root, split)`` builds for a folder (the split sub-folder,
    ``ImageDataset`` with its options, extra keywords to the reader), listed safely."""
    if search_split:
        root = _search_split(root, split)
    reader_kwargs = {k: v for k, v in reader_kwargs.items() if v is not None}
    reader = SafeReaderImageFolder(root, class_map=class_map or '', **reader_kwargs)
    return CheckedImageDataset(
        root, reader=reader, load_bytes=load_bytes, input_img_mode=input_img_mode, transform=transform,
        target_transform=target_transform)


def _strip_ext(path: str) -> str:
    return os.path.splitext(path)[0].replace(os.sep, '/')


def get_image_ids(dataset: Any) -> List[str]:
    """Stable string id of every sample, in dataset order (see module docstring for the rules)."""
    if isinstance(dataset, torch.utils.data.Subset):
        parent = get_image_ids(dataset.dataset)
        return [parent[int(i)] for i in dataset.indices]
    if isinstance(dataset, DigitsGrid):
        return list(dataset.image_ids)
    ids = getattr(dataset, 'image_ids', None)
    if ids is not None:
        return [str(i) for i in ids]
    reader = getattr(dataset, 'reader', None)
    if reader is not None:
        samples = getattr(reader, 'samples', None)
        root = getattr(reader, 'root', None)
        if samples is not None and root is not None and os.path.isdir(root):  # ReaderImageFolder
            return [_strip_ext(os.path.relpath(path, root)) for path, _ in samples]
        hf = getattr(reader, 'dataset', None)
        if hf is not None and hasattr(hf, 'column_names'):  # ReaderHfds
            for key in ('image_id', 'id'):
                if key in hf.column_names:
                    return [str(v) for v in hf[key]]
            return [str(i) for i in range(len(dataset))]
        try:
            return [_strip_ext(dataset.filename(i, absolute=False)) for i in range(len(dataset))]
        except (AttributeError, NotImplementedError, TypeError):
            pass
    samples = getattr(dataset, 'samples', None)
    root = getattr(dataset, 'root', None)
    if samples is not None and root is not None and os.path.isdir(str(root)):  # torchvision ImageFolder
        return [_strip_ext(os.path.relpath(path, root)) for path, _ in samples]
    return [str(i) for i in range(len(dataset))]


def get_real_labels(dataset: Any) -> Optional[List[List[int]]]:
    """Multi-label ground truth (list of sorted label lists, one per sample) when the data has one, else None.

    ImageNet ReaL labels are added by train.py (``--real-labels``), not here.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        parent = get_real_labels(dataset.dataset)
        return None if parent is None else [parent[int(i)] for i in dataset.indices]
    real = getattr(dataset, 'real_labels', None)
    return [list(map(int, r)) for r in real] if real is not None else None


def _class_to_idx(dataset: Any) -> Optional[dict]:
    if isinstance(dataset, torch.utils.data.Subset):
        return _class_to_idx(dataset.dataset)
    for obj in (getattr(dataset, 'reader', None), dataset):
        c2i = getattr(obj, 'class_to_idx', None) if obj is not None else None
        if c2i:
            return dict(c2i)
    return None


def get_num_classes(dataset: Any) -> Optional[int]:
    """Number of classes, best effort (``num_classes`` attribute, else the reader's ``class_to_idx``); None if unknown."""
    if isinstance(dataset, torch.utils.data.Subset):
        return get_num_classes(dataset.dataset)
    n = getattr(dataset, 'num_classes', None)
    if isinstance(n, int):
        return n
    c2i = _class_to_idx(dataset)
    if c2i:
        return max(int(v) for v in c2i.values()) + 1
    classes = getattr(dataset, 'classes', None)
    return len(classes) if classes else None


def get_class_names(dataset: Any) -> Optional[List[str]]:
    """Class names indexed by class, best effort (``class_names``, the reader's ``class_to_idx``, ``classes``)."""
    if isinstance(dataset, torch.utils.data.Subset):
        return get_class_names(dataset.dataset)
    names = getattr(dataset, 'class_names', None)
    if names:
        return [str(n) for n in names]
    c2i = _class_to_idx(dataset)
    if c2i:
        out = [''] * (max(int(v) for v in c2i.values()) + 1)
        for k, v in c2i.items():
            out[int(v)] = str(k)
        return out
    classes = getattr(dataset, 'classes', None)
    return [str(c) for c in classes] if classes else None
