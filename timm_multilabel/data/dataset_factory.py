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
from timm.data.readers.class_map import load_class_map as timm_load_class_map
from timm.data.readers.reader_image_folder import ReaderImageFolder
import torch.utils.data

from ..errors import UserError
from .bad_images import CheckedImageDataset
from .digits_grid import DigitsGrid
from .digits_main import DigitsMain
from .listing import SafeReaderImageFolder

__all__ = ['create_dataset', 'check_dataset_options', 'dataset_kind', 'dataset_options', 'default_img_mode', 'get_image_ids',
           'get_real_labels', 'get_num_classes', 'get_class_names']

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


# timm's dataset flags, where each means something (timm's train.py passes them all to create_dataset;
# timm's create_dataset drops those a kind ignores; ours refuses them in one line)
_OPTION_FLAGS = {
    'class_map': '--class-map', 'input_img_mode': '--input-img-mode', 'input_key': '--input-key',
    'target_key': '--target-key', 'download': '--dataset-download', 'trust_remote_code': '--dataset-trust-remote-code',
}
_OPTION_APPLIES = {
    'folder': ('class_map', 'input_img_mode', 'input_key'),
    'tar': ('class_map', 'input_img_mode'),
    'hfds': ('class_map', 'input_img_mode', 'input_key', 'target_key', 'trust_remote_code'),
    'torch': ('download',),
}
_WHERE_APPLIES = {
    'class_map': 'image folders, tar files and hfds/ datasets',
    'input_img_mode': 'image folders, tar files and hfds/ datasets',
    'input_key': 'hfds/ datasets (the image column) and image folders (the file extensions, e.g. ".png;.jpg")',
    'target_key': 'hfds/ datasets (the label column)',
    'download': 'torch/ datasets (hfds/ datasets come from the Hub or its cache by themselves)',
    'trust_remote_code': 'hfds/ datasets',
}
_KIND_NAMES = {'digits': 'the built-in {name} data', 'folder': 'an image folder', 'tar': 'a tar file of images',
               'torch': 'torchvision\'s {name}', 'hfds': '{name}'}


def dataset_kind(name: str, root: Optional[str] = None) -> str:
    """'digits' (the built-in data), 'folder', 'tar', 'hfds', 'torch', or timm's other prefixes
    ('hfids', 'tfds', 'wds')."""
    name = name or ''
    if name.lower() in DIGITS_GRID_NAMES + DIGITS_MAIN_NAMES:
        return 'digits'
    prefix, sep, _ = name.partition('/')
    if sep and prefix.lower() != '':
        return prefix.lower()
    if root and os.path.isfile(root) and root.endswith('.tar'):
        return 'tar'
    return 'folder'


def check_dataset_options(name: str, root: Optional[str] = None, **options: Any) -> None:
    """Refuse, in one line, a timm dataset option given for a dataset kind it means nothing for
    (e.g. ``--class-map`` with the built-in digits-grid). ``options``: ``class_map``, ``input_img_mode``,
    ``input_key``, ``target_key``, ``download``, ``trust_remote_code`` (unset: None / '' / False)."""
    kind = dataset_kind(name, root)
    if kind not in _KIND_NAMES:
        return  # hfids / tfds / wds: timm's readers take these options
    for key, value in options.items():
        if key in _OPTION_FLAGS and value not in (None, '', False) and key not in _OPTION_APPLIES.get(kind, ()):
            what = _KIND_NAMES[kind].format(name=name)
            raise UserError(f'{_OPTION_FLAGS[key]} does not apply to {what}; it applies to {_WHERE_APPLIES[key]}')


def dataset_options(args: Any) -> dict:
    """train.py's timm dataset flags (``--class-map --input-img-mode --input-key --target-key
    --dataset-download --dataset-trust-remote-code``, and the input channels of ``--input-size`` /
    ``--in-chans``) as :func:`create_dataset` keywords."""
    input_size = getattr(args, 'input_size', None)
    return dict(
        class_map=getattr(args, 'class_map', ''), input_img_mode=getattr(args, 'input_img_mode', None),
        input_key=getattr(args, 'input_key', None), target_key=getattr(args, 'target_key', None),
        download=getattr(args, 'dataset_download', False),
        trust_remote_code=getattr(args, 'dataset_trust_remote_code', False),
        in_chans=input_size[0] if input_size else getattr(args, 'in_chans', None) or 3)


def default_img_mode(in_chans: int) -> str:
    """timm's train.py rule for an unset ``--input-img-mode``: 'RGB' for 3 input channels, else 'L'."""
    return 'RGB' if in_chans == 3 else 'L'


def _load_class_map(class_map: Any, root: Optional[str]) -> Optional[dict]:
    """timm's ``load_class_map`` (a .txt file: one class name a line, its index the line number; a .pkl
    dict; a dict), the file found as given or under ``root`` as timm does; one-line errors."""
    if not class_map:
        return None
    if isinstance(class_map, dict):
        return dict(class_map)
    path = str(class_map)
    if not os.path.isfile(path) and not (root and os.path.isfile(os.path.join(root, path))):
        raise UserError(f'--class-map {path}: no such file')
    if os.path.splitext(path)[1].lower() not in ('.txt', '.pkl'):
        raise UserError(f'--class-map {path}: expected a .txt file (one class name a line) or a .pkl dict')
    try:
        mapping = timm_load_class_map(path, root or '')
    except Exception as e:  # noqa: BLE001 -- unreadable or not a dict: one line
        raise UserError(f'--class-map {path}: cannot read it ({e})') from e
    if not mapping:
        raise UserError(f'--class-map {path}: empty')
    return mapping


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
        class_map: Any = None,
        input_img_mode: Optional[str] = None,
        input_key: Optional[str] = None,
        target_key: Optional[str] = None,
        download: bool = False,
        trust_remote_code: bool = False,
        in_chans: int = 3,
        **kwargs,
) -> torch.utils.data.Dataset:
    """Create a dataset by name (train.py's ``--dataset``, ``--data-dir``, ``--train-split``/``--val-split``).

    Args:
        name: 'digits-grid' for the built-in grids; otherwise a timm dataset name: '' / 'imagefolder'
            (folder or tar at ``root``), 'hfds/<hub id or local folder>', 'hfds/imagefolder' (and other
            packaged builders, with ``root`` as their ``data_dir``), 'torch/<name>', ...
        root: data folder (timm's ``--data-dir``); for ``hfds/<id or folder>`` the datasets cache;
            ignored by digits-grid.
        split: 'train' -> digits-grid train grids, anything else -> test grids; passed on to timm.
        is_training: passed on to timm (iterable datasets shuffle).
        seed: digits-grid generation seed; timm's seed for iterable datasets.
        transform: set as the dataset's ``transform``.
        num_samples: digits-grid size (default 10000 / 2000); passed on to timm's iterable datasets.
        skip_bad_images: for image datasets (folder, tar, ``hfds/``): an image that cannot be decoded
            is ``None`` (drop it with ``bad_images.drop_missing``) instead of raising ``BadImageError``.
        skip_log: file that lists each skipped image once (one path a line).
        class_map, input_img_mode, input_key, target_key, download, trust_remote_code: timm's
            ``--class-map`` (class name -> index: reorders and limits the classes), ``--input-img-mode``
            (PIL mode images are converted to; unset: :func:`default_img_mode` of ``in_chans``),
            ``--input-key`` / ``--target-key`` (hfds: image and label columns; folder: input_key lists
            the file extensions), ``--dataset-download`` (torch/), ``--dataset-trust-remote-code`` (hfds/).
            One given for a kind it means nothing for is refused (:func:`check_dataset_options`).
        in_chans: the model's input channels, for the default ``input_img_mode``.
        **kwargs: DigitsGrid options (``cell_size``, ``grid``, ``center_prob``, ``target_transform``, ...)
            or other timm ``create_dataset`` options (``load_bytes``, ...).
    """
    name = name or ''
    options = dict(class_map=class_map, input_img_mode=input_img_mode, input_key=input_key, target_key=target_key,
                   download=download, trust_remote_code=trust_remote_code)
    check_dataset_options(name, root, **options)
    kind = dataset_kind(name, root)
    if kind == 'digits':
        dg_kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY_KWARGS}
        cls = DigitsGrid if name.lower() in DIGITS_GRID_NAMES else DigitsMain
        try:
            return cls(
                split=_digits_split(split), num_samples=num_samples, seed=seed, transform=transform, **dg_kwargs)
        except TypeError as e:
            raise UserError(f'--dataset {name}: {e}') from None

    img_mode = input_img_mode or default_img_mode(in_chans)
    timm_kwargs = {k: v for k, v in options.items() if v not in (None, '', False)}
    timm_kwargs.pop('input_img_mode', None)
    prefix, sep, _ = name.partition('/')
    prefix = prefix.lower() if sep else ''
    if prefix in ('', 'torch'):
        if name.lower() in _FOLDER_NAMES:
            name = ''
        if root is None or root == '':
            raise UserError(f'--dataset {name or "(folder)"}: --data-dir is required')
        if not os.path.exists(root) and not (prefix == 'torch' and download):
            raise UserError(f'--data-dir {root}: no such directory')
    if kind == 'hfds':
        ds = _hf_dataset(name.partition('/')[2], root, split, class_map, img_mode, input_key, target_key,
                         trust_remote_code, **kwargs)
    else:
        try:
            if prefix == '' and os.path.isdir(root):
                split_root = _search_split(root, split) if kwargs.get('search_split', True) else root
                timm_kwargs['class_map'] = _load_class_map(class_map, split_root)
                ds = _folder_dataset(root, split, input_img_mode=img_mode, **timm_kwargs, **kwargs)
            else:
                if kind == 'tar':
                    timm_kwargs['class_map'] = _load_class_map(class_map, os.path.dirname(root))
                if kind not in ('torch',):
                    timm_kwargs['input_img_mode'] = img_mode
                ds = timm.data.create_dataset(
                    name, root=root, split=split, is_training=is_training, seed=seed,
                    num_samples=num_samples, **timm_kwargs, **kwargs)
        except RuntimeError as e:
            if 'Found 0 images' in str(e):
                ext = f' with the extensions of --input-key {input_key}' if input_key else ''
                raise UserError(f'--data-dir {root}: no images found{ext} (split {split!r})') from None
            raise
    if isinstance(ds, CheckedImageDataset):
        ds.skip_bad_images = bool(skip_bad_images)
        ds.skip_log = type(ds.skip_log)(skip_log)
    elif type(ds) is timm.data.ImageDataset:
        ds = CheckedImageDataset.from_dataset(ds, skip_bad_images=skip_bad_images, skip_log=skip_log)
    if transform is not None:
        ds.transform = transform
    return ds


def _hf_dataset(name: str, root: Optional[str], split: str, class_map: Any, img_mode: str,
                input_key: Optional[str], target_key: Optional[str], trust_remote_code: bool,
                load_bytes: bool = False, target_format: Optional[str] = None,
                additional_features: Optional[List[str]] = None, **unused: Any) -> CheckedImageDataset:
    """A ``hfds/`` dataset: one split loaded by :func:`~timm_multilabel.data.hfds.load_hf_split`, read by
    timm's Hugging Face reader semantics (:class:`~timm_multilabel.data.hfds.ReaderHfDataset`)."""
    if not name:
        raise UserError('--dataset hfds/: name a Hub dataset (hfds/ORG/NAME), a local folder (hfds//abs/path) or '
                        'hfds/imagefolder with --data-dir DIR')
    # here, not at the top: .hfds imports `datasets` (over a second of CPU at every train.py start)
    from .hfds import ReaderHfDataset, load_hf_split

    mapping = _load_class_map(class_map, None)
    hf = load_hf_split(name, root, split, trust_remote_code=trust_remote_code)
    reader = ReaderHfDataset(hf, name=name, split=split, class_map=mapping, input_key=input_key,
                             target_key=target_key, target_format=target_format,
                             additional_features=additional_features)
    return CheckedImageDataset(name, reader=reader, load_bytes=load_bytes, input_img_mode=img_mode)


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
