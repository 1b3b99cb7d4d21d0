"""Safe listing of an image folder: symlinks followed at most once, sorted, counted.

``os.walk(root, followlinks=True)`` (what timm's folder reader and the old ``annotate`` listing
used) walks a symlink loop until the path is too long (a link to an ancestor turns 32 images into
1,312) and, with two loops, practically forever. :func:`walk_images` walks the real folders first,
then the symlinked ones in path order, each folder (by ``(st_dev, st_ino)``) once: a link to a
folder already listed is skipped with one warning naming it. One INFO line gives the counts.

:func:`find_images_and_targets` is timm's function of the same name (same class-folder semantics,
same ``class_to_idx``, same order) on this listing, and :class:`SafeReaderImageFolder` is timm's
``ReaderImageFolder`` built on it; ``timm_multilabel.data.create_dataset`` uses it for folders.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from timm.data.readers.class_map import load_class_map
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader import Reader
from timm.data.readers.reader_image_folder import ReaderImageFolder
from timm.utils.misc import natural_key

from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'Listing', 'walk_images', 'find_images_and_targets', 'SafeReaderImageFolder']

_logger = logging.getLogger(__name__)


def _extensions() -> Tuple[str, ...]:
    exts = {'.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp'}
    exts |= {e.lower() for e in get_img_extensions()}
    return tuple(sorted(exts))


IMAGE_EXTENSIONS = _extensions()
"""Extensions annotate and check-images list (timm's folder reader lists only ``get_img_extensions()``)."""


@dataclass
class Listing:
    """What :func:`walk_images` found under ``root``.

    ``files``: image paths (``root`` joined with the path as walked, through symlink names),
    sorted by their path relative to ``root``; ``links_skipped``: symlinked folders not entered
    because their folder was already listed; ``ignored``: files that are not images (by
    extension), hidden files when hidden entries are skipped, dangling links.
    """
    root: str
    files: List[str] = field(default_factory=list)
    links_skipped: List[str] = field(default_factory=list)
    ignored: int = 0

    @property
    def images(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        """The one INFO line: ``<root>: N images, L symlinked folders skipped (already listed), M non-image files ignored``."""
        return (f'{self.root}: {self.images} images, {len(self.links_skipped)} symlinked folders skipped '
                f'(already listed), {self.ignored} non-image files ignored')


def _key(st: os.stat_result) -> Tuple[int, int]:
    return st.st_dev, st.st_ino


def walk_images(
        root: str,
        extensions: Iterable[str],
        skip_hidden: bool = False,
        log: bool = True,
) -> Listing:
    """Every file under ``root`` whose extension (case-insensitive) is in ``extensions``, recursively.

    Args:
        root: the folder; ``UserError`` when it is not one.
        extensions: e.g. ``('.jpg', '.png')``.
        skip_hidden: skip files and folders whose name starts with '.' (annotate's rule; timm's
            reader lists them).
        log: log the counts (one INFO line) and each skipped link (one WARNING each).

    Real folders are walked first, then symlinked folders in path order; a folder reached a
    second time (by ``(st_dev, st_ino)``: a loop, or a second link to it) is skipped.
    """
    if not os.path.isdir(root):
        raise UserError(f'image folder not found: {root}')
    exts = {e.lower() for e in extensions}
    out = Listing(root=root)
    visited = {_key(os.stat(root))}
    stack: List[str] = [root]
    links: List[str] = []  # symlinked folders, entered after every real folder is listed

    def enter(path: str, st: os.stat_result) -> bool:
        key = _key(st)
        if key in visited:
            out.links_skipped.append(path)
            if log:
                _logger.warning('%s: skipped, it is %s, a folder already listed (a symlink loop or a second link)', path, os.path.realpath(path))
            return False
        visited.add(key)
        stack.append(path)
        return True

    while stack or links:
        if not stack:
            links.sort(reverse=True)
            link = links.pop()
            try:
                enter(link, os.stat(link))
            except OSError:
                out.ignored += 1
            continue
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if log:
                _logger.warning('%s: cannot list this folder (%s), skipped', folder, e.strerror or e)
            continue
        for entry in entries:
            hidden = entry.name.startswith('.')
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if hidden and skip_hidden:
                    continue
                if entry.is_symlink():
                    links.append(entry.path)
                else:
                    try:
                        enter(entry.path, entry.stat(follow_symlinks=False))
                    except OSError:
                        out.ignored += 1
                continue
            try:
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if is_file and not (hidden and skip_hidden) and os.path.splitext(entry.name)[1].lower() in exts:
                out.files.append(entry.path)
            else:
                out.ignored += 1
    out.files.sort()  # every path starts with root: sorted by the path relative to it
    if log:
        _logger.info(out.summary())
    return out


def find_images_and_targets(
        folder: str,
        types: Optional[Iterable[str]] = None,
        class_to_idx: Optional[Dict[str, int]] = None,
        leaf_name_only: bool = True,
        sort: bool = True,
):
    """timm's ``find_images_and_targets`` on the safe listing: ``([(path, class index), ...], class_to_idx)``.

    As timm's: an image's class is the name of the folder that holds it (``leaf_name_only``; else
    its relative folder path with '/' -> '_'; '' for files directly in ``folder``); classes are
    indexed in natural-sort order; with a given ``class_to_idx``, images of other classes are
    left out; samples are sorted by natural-sort order of their path.
    """
    types = get_img_extensions(as_set=True) if not types else set(types)
    listing = walk_images(folder, types)
    labels, filenames, label_of = [], [], {}
    for path in listing.files:
        parent = os.path.dirname(path)
        if parent not in label_of:
            rel_path = os.path.relpath(parent, folder)
            rel_path = '' if rel_path == os.curdir else rel_path
            label_of[parent] = os.path.basename(rel_path) if leaf_name_only else rel_path.replace(os.path.sep, '_')
        labels.append(label_of[parent])
        filenames.append(path)
    if class_to_idx is None:
        class_to_idx = {c: idx for idx, c in enumerate(sorted(set(labels), key=natural_key))}
    images_and_targets = [(f, class_to_idx[lab]) for f, lab in zip(filenames, labels) if lab in class_to_idx]
    if sort:
        images_and_targets = sorted(images_and_targets, key=lambda k: natural_key(k[0]))
    return images_and_targets, class_to_idx


class SafeReaderImageFolder(ReaderImageFolder):
    """timm's ``ReaderImageFolder`` (same arguments, samples, ``class_to_idx`` and items) whose
    listing follows each symlinked folder at most once (:func:`find_images_and_targets`)."""

    def __init__(self, root: str, class_map: str = '', input_key: Optional[str] = None):
        Reader.__init__(self)  # not ReaderImageFolder.__init__: that one lists with os.walk
        self.root = root
        class_to_idx = load_class_map(class_map, root) if class_map else None
        find_types = input_key.split(';') if input_key else None
        self.samples, self.class_to_idx = find_images_and_targets(root, class_to_idx=class_to_idx, types=find_types)
        if len(self.samples) == 0:
            raise RuntimeError(
                f'Found 0 images in subfolders of {root}. '
                f'Supported image extensions are {", ".join(get_img_extensions())}')
