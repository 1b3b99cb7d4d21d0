"""Decode every image of a folder up front, in parallel, before a long run finds a bad one hours in.

    report = check_images('data/train', workers=8)
    report.bad  # [('data/train/a/x.jpg', 'corrupt image data/train/a/x.jpg (OSError: image file is truncated ...)')]

``timm-multilabel check-images DIR`` is the command line.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from .images import BadImageError, load_rgb
from .listing import IMAGE_EXTENSIONS, Listing, walk_images

__all__ = ['CheckReport', 'check_images', 'decode_error']


def decode_error(path: str) -> Optional[str]:
    """None when ``path`` decodes to RGB (:func:`~timm_multilabel.data.images.load_rgb`), else the
    one-line ``BadImageError`` message naming it."""
    try:
        load_rgb(path).close()
        return None
    except BadImageError as e:
        return str(e)


def _indexed_error(item: Tuple[int, str]) -> Tuple[int, Optional[str]]:
    return item[0], decode_error(item[1])


@dataclass
class CheckReport:
    """What :func:`check_images` found: the listing, and ``bad`` as ``[(path, message), ...]`` in path order."""
    listing: Listing
    bad: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def images(self) -> int:
        return self.listing.images

    @property
    def ok(self) -> int:
        return self.images - len(self.bad)

    def to_dict(self) -> Dict[str, Any]:
        return {
            'root': self.listing.root, 'images': self.images, 'ok': self.ok,
            'bad': [{'path': p, 'error': m} for p, m in self.bad],
            'links_skipped': list(self.listing.links_skipped), 'ignored': self.listing.ignored,
        }


def decode_all(paths: Sequence[str], workers: int = 0, progress: bool = True) -> List[Tuple[str, str]]:
    """``[(path, message), ...]`` of the files in ``paths`` that do not decode, in ``paths`` order;
    ``workers`` > 0 decodes in that many processes."""
    errors: Dict[int, str] = {}
    items = list(enumerate(paths))
    bar = tqdm(total=len(items), unit='img', desc='decoding', disable=not progress, dynamic_ncols=True)
    try:
        if workers > 0 and len(items) > 1:
            chunk = max(1, min(64, len(items) // (workers * 8)))
            with multiprocessing.get_context().Pool(workers) as pool:
                for i, err in pool.imap_unordered(_indexed_error, items, chunksize=chunk):
                    if err:
                        errors[i] = err
                    bar.update(1)
        else:
            for i, path in items:
                err = decode_error(path)
                if err:
                    errors[i] = err
                bar.update(1)
    finally:
        bar.close()
    return [(paths[i], errors[i]) for i in sorted(errors)]


def check_images(root: str, workers: Optional[int] = None, progress: bool = True) -> CheckReport:
    """List ``root`` safely (:func:`~timm_multilabel.data.listing.walk_images`: every extension that
    train.py or annotate reads, hidden files included, as timm's reader lists them) and decode every
    image; ``workers`` processes (default: the CPU count, at most 8). ``UserError`` when ``root`` is not
    a folder."""
    listing = walk_images(root, IMAGE_EXTENSIONS, skip_hidden=False)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    return CheckReport(listing, decode_all(listing.files, workers=workers, progress=progress))
