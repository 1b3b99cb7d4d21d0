"""Images of a folder in any layout, listed recursively, with their image ids.

The image id of ``<root>/n01440764/n01440764_10026.JPEG`` is ``n01440764/n01440764_10026``:
the path relative to the root, '/'-separated, without extension. The listing is sorted by
image id, so every process and every resumed run sees the same order. Listing is
:func:`timm_multilabel.data.listing.walk_images` (symlinked folders followed at most once, counts
logged); reading is :func:`timm_multilabel.data.images.load_rgb` (16-bit and other modes scaled to
8 bits; a file that cannot be decoded is a one-line ``BadImageError`` naming it).
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.images import BadImageError, load_rgb, to_rgb
from ..data.listing import IMAGE_EXTENSIONS, walk_images
from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'ImageListDataset', 'DatasetImages']




def list_images(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Tuple[str, str]]:
    """``[(image_id, path), ...]`` for every image under ``root`` (recursive, hidden entries
    skipped, each symlinked folder at most once), sorted by image id. Two files with the same id
    (``a.jpg`` and ``a.png``) are an error."""
    found = {}
    root_prefix = os.path.join(root, '')
    for path in walk_images(root, extensions, skip_hidden=True).files:
        rel = path[len(root_prefix):] if path.startswith(root_prefix) else os.path.relpath(path, root)
        image_id = os.path.splitext(rel)[0].replace(os.sep, '/')
        if image_id in found:
            raise UserError(f'two images share the image id {image_id!r}: {found[image_id]} and {path}')
        found[image_id] = path
    if not found:
        exts = sorted({e.lower() for e in extensions})
        raise UserError(f'no images ({", ".join(exts)}) found under {root}')
    return sorted(found.items())


class ImageListDataset(Dataset):
    """``dataset[i] -> (image tensor, i, error)``: the i-th file through ``transform``.

    An unreadable image does not raise inside a DataLoader worker (which would bury the
    message in a traceback): it returns a zero tensor and ``error``, the one-line
    ``BadImageError`` message naming the file, and the caller raises ``UserError`` with it.
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
            return self.transform(load_rgb(path)), index, ''
        except BadImageError as e:  # reported by the main process
            return torch.zeros(3, self.img_size, self.img_size), index, str(e)


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
            return self.transform(to_rgb(image)), index, ''
        except BadImageError as e:  # names the file: reported by the main process
            return torch.zeros(3, self.img_size, self.img_size), index, str(e)
        except Exception as e:  # noqa: BLE001 -- reported by the main process
            name = f'image {self.ids[index]!r}' if self.ids is not None else f'sample {index}'
            return torch.zeros(3, self.img_size, self.img_size), index, f'cannot read {name} of the dataset: {e}'


def read_image(path: str, transform: Optional[Callable] = None):
    """One image as RGB PIL (or through ``transform``), 16-bit and other modes scaled to 8 bits;
    ``BadImageError`` (a ``UserError``) naming the file if it cannot be decoded."""
    img = load_rgb(path)
    return transform(img) if transform is not None else img
