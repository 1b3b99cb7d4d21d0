"""ImageNet ReaL labels ("Are we done with ImageNet?", Beyer et al. 2020) for ``--real-labels``.

The labels are a JSON list of 50,000 label lists; entry ``i`` belongs to validation image
``ILSVRC2012_val_{i + 1:08d}``. Empty lists mark images the raters left without a label
(the ReaL metrics skip them). timm bundles the file as
``timm/data/_info/imagenet_real_labels.json``; it is the default here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from typing import Iterable, List, Optional, Sequence, Sized, Union

from ..errors import UserError

__all__ = [
    'IMAGENET_VAL_SIZE', 'default_real_labels_path', 'load_real_labels',
    'real_labels_for_files', 'check_real_labels', 'val_filename',
]

IMAGENET_VAL_SIZE = 50_000

_VAL_NAME = re.compile(r'^ILSVRC2012_val_(\d{8})(?:\.[A-Za-z0-9]+)?$')


def val_filename(index: int) -> str:
    """Basename of ImageNet validation image ``index`` (0-based): ``ILSVRC2012_val_{index+1:08d}.JPEG``."""
    return f'ILSVRC2012_val_{index + 1:08d}.JPEG'


def default_real_labels_path() -> str:
    """Path of the ReaL labels file bundled with timm (found without importing timm)."""
    spec = importlib.util.find_spec('timm')
    if spec is None or not spec.submodule_search_locations:
        raise UserError('--real-labels: timm is not installed, so its bundled ReaL labels are unavailable')
    for root in spec.submodule_search_locations:
        path = os.path.join(root, 'data', '_info', 'imagenet_real_labels.json')
        if os.path.isfile(path):
            return path
    raise UserError('--real-labels: this timm install has no data/_info/imagenet_real_labels.json; pass a file')


def load_real_labels(path: Optional[Union[str, os.PathLike]] = None) -> List[List[int]]:
    """Read ReaL labels: timm's bundled file when ``path`` is None, else a user JSON file.

    Args:
        path: JSON file holding a list of label lists (class ids >= 0), or None.

    Returns:
        list of label lists; entry ``i`` is validation image ``ILSVRC2012_val_{i+1:08d}``.
    """
    where = default_real_labels_path() if path is None else os.fspath(path)
    if not os.path.isfile(where):
        raise UserError(f'--real-labels: file not found: {where}')
    with open(where, encoding='utf-8') as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f'--real-labels: {where} is not valid JSON ({e.msg} at line {e.lineno})') from None
    if not isinstance(data, list):
        raise UserError(f'--real-labels: {where} must hold a JSON list of label lists, got {type(data).__name__}')
    for i, entry in enumerate(data):
        if not isinstance(entry, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in entry):
            raise UserError(f'--real-labels: {where} entry {i} ({val_filename(i)}) must be a list of '
                            f'class ids >= 0, got {json.dumps(entry)[:60]}')
    return data


def _val_index(filename: Union[str, os.PathLike]) -> Optional[int]:
    base = re.split(r'[\\/]', os.fspath(filename))[-1]
    m = _VAL_NAME.match(base)
    return int(m.group(1)) - 1 if m else None


def real_labels_for_files(
        filenames: Iterable[Union[str, os.PathLike]],
        real_labels: Sequence[Sequence[int]],
) -> List[List[int]]:
    """ReaL label lists for validation images given by file name, in the given order.

    Args:
        filenames: paths (any directory; only the basename counts) such as
            ``val/n01440764/ILSVRC2012_val_00000293.JPEG``, or bare keys ``ILSVRC2012_val_00000293``.
        real_labels: output of :func:`load_real_labels`.

    Returns:
        one label list per file.
    """
    out = []
    for name in filenames:
        idx = _val_index(name)
        if idx is None or not 0 <= idx < len(real_labels):
            why = 'is not an ImageNet validation file name (ILSVRC2012_val_XXXXXXXX)' if idx is None else \
                f'has no entry in the ReaL labels ({len(real_labels)} entries)'
            raise UserError(f'--real-labels: {os.fspath(name)} {why}')
        out.append(list(real_labels[idx]))
    return out


def check_real_labels(real_labels: Sized, num_samples: int, where: str) -> None:
    """Raise a one-line :class:`UserError` unless there is one ReaL entry per validation sample.

    Args:
        real_labels: label lists or ``Tensor[N, C]``.
        num_samples: number of images in the validation set.
        where: what the validation set is (named in the message), e.g. ``'--val-split validation'``.
    """
    if len(real_labels) != num_samples:
        raise UserError(f'--real-labels: {len(real_labels)} ReaL entries but {where} has {num_samples} images')
