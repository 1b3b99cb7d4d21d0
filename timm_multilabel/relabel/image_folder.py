"""Images of a folder in any layout, listed recursively, with their image ids.

The image id of ``<root>/n01440764/n01440764_10026.JPEG`` is ``n01440764/n01440764_10026``:
the path relative to the root, '/'-separated, without extension. The listing is sorted by
image id, so every process and every resumed run sees the same order.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from timm.data.readers.img_extensions import get_img_extensions
from torch.utils.data import Dataset

from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'ImageListDataset', 'DatasetImages']


def _extensions() -> Tuple[str, ...]:
    exts = {'.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp'}
    exts |= {e.lower() for e in get_img_extensions()}
    return tuple(sorted(exts))


IMAGE_EXTENSIONS = _extensions()


def list_images(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Tuple[str, str]]:
    """``[(image_id, path), ...]`` for every image under ``root`` (recursive, hidden entries
    skipped), sorted by image id. Two files with the same id (``a.jpg`` and ``a.png``) are an error."""
    if not os.path.isdir(root):
        raise UserError(f'image folder not found: {root}')
    exts = {e.lower() for e in extensions}
    found = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in filenames:
            stem, ext = os.path.splitext(name)
            if name.startswith('.') or ext.lower() not in exts:
                continue
            path = os.path.join(dirpath, name)
            image_id = os.path.relpath(os.path.join(dirpath, stem), root).replace(os.sep, '/')
            if image_id in found:
                raise UserError(f'two images share the image id {image_id!r}: {found[image_id]} and {path}')
            found[image_id] = path
    if not found:
        raise UserError(f'no images ({", ".join(sorted(exts))}) found under {root}')
    return sorted(found.items())


class ImageListDataset(Dataset):
    """``dataset[i] -> (image tensor, i, error)``: the i-th file through ``transform``.

    An unreadable image does not raise inside a DataLoader worker (which would bury the
    message in a traceback): it returns a zero tensor and ``error`` naming the file, and the
    caller raises ``UserError`` with it.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, img_size: int):
        self.paths = list(paths)
        self.transform = transform
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                image = self.transform(img.convert('RGB'))
            return image, index, ''
        except Exception as e:  # noqa: BLE001 -- reported by the main process
            return torch.zeros(3, self.img_size, self.img_size), index, f'cannot read image {path}: {e}'


class DatasetImages(Dataset):
    """``dataset[i] -> (image tensor, i, error)`` for a dataset whose items are ``(PIL image, ...)``
    (a timm ``ImageDataset`` without transform, e.g. ``hfds/NAME``), errors reported as by
    :class:`ImageListDataset`."""

    def __init__(self, dataset: Dataset, transform: Callable, img_size: int, ids: Optional[Sequence[str]] = None):
        self.dataset = dataset
        self.transform = transform
        self.img_size = img_size
        self.ids = ids

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        try:
            item = self.dataset[index]
            image = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(image, Image.Image):
                raise TypeError(f'expected a PIL image, got {type(image).__name__}')
            return self.transform(image.convert('RGB')), index, ''
        except Exception as e:  # noqa: BLE001 -- reported by the main process
            name = f'image {self.ids[index]!r}' if self.ids is not None else f'sample {index}'
            return torch.zeros(3, self.img_size, self.img_size), index, f'cannot read {name} of the dataset: {e}'


def read_image(path: str, transform: Optional[Callable] = None):
    """One image as RGB PIL (or through ``transform``); ``UserError`` naming the file if unreadable."""
    try:
        with Image.open(path) as img:
            img = img.convert('RGB')
    except Exception as e:  # noqa: BLE001
        raise UserError(f'cannot read image {path}: {e}') from e
    return transform(img) if transform is not None else img
