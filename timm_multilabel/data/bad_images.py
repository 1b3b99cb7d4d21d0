"""Never a silent substitution: a timm ``ImageDataset`` that raises on a bad image, or skips it on request.

timm's ``ImageDataset.__getitem__`` catches a decoding error and returns the *next* sample, which
then trains under the wrong index (its label map, its per-image logs). :class:`CheckedImageDataset`
decodes with :func:`~timm_multilabel.data.images.load_image` (16-bit and other modes scaled to 8 bits)
and, on a file that cannot be decoded:

* raises :class:`~timm_multilabel.data.images.BadImageError` (one line naming the file), or
* with ``skip_bad_images=True``, returns ``None`` for that sample, appends the file's path once to
  ``skip_log`` (one path per line, shared by DataLoader workers and ranks: ``O_APPEND`` under a file
  lock, a path already in the log is not written again) and logs one warning. Wrap the loader's
  collate in :func:`drop_missing` so the batch goes on without it; the file fails again next epoch
  and is dropped again. :func:`read_skip_log` lists what was skipped.

    ds = create_dataset('', root, split='train', skip_bad_images=True, skip_log=out / 'skipped_images.txt')
    loader = DataLoader(ds, batch_size=64, num_workers=8, collate_fn=drop_missing(None))
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, List, Optional, Sequence, Set, Union

from timm.data import ImageDataset
from torch.utils.data import default_collate

from .images import BadImageError, bad_image, load_image

try:
    import fcntl
except ImportError:  # Windows: O_APPEND alone
    fcntl = None

__all__ = ['CheckedImageDataset', 'SkipLog', 'drop_missing', 'DropMissing', 'read_skip_log']

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def read_skip_log(path: Optional[PathLike]) -> List[str]:
    """The paths in a skip log, each once, in the order first skipped; ``[]`` if there is no log."""
    if path is None or not os.path.exists(path):
        return []
    with open(path, encoding='utf-8', errors='replace') as f:
        return list(dict.fromkeys(line.rstrip('\n') for line in f if line.strip()))


class SkipLog:
    """Append-once log of skipped files; safe to share between processes (see module docstring).

    ``record(item)`` returns True when ``item`` was not yet in the log (nor recorded by this
    process) and is now: the caller warns then, so each file is warned about once per run.
    Without a ``path`` it only remembers what this process recorded.
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = None if path is None else os.fspath(path)
        self._seen: Set[str] = set()

    def record(self, item: str) -> bool:
        item = item.replace('\n', '\\n')
        if item in self._seen:
            return False
        self._seen.add(item)
        if self.path is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            chunks = []
            os.lseek(fd, 0, os.SEEK_SET)
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
            if item in b''.join(chunks).decode('utf-8', 'replace').splitlines():
                return False
            os.write(fd, (item + '\n').encode('utf-8'))  # O_APPEND: at the end, whatever the offset
            return True
        finally:
            os.close(fd)  # releases the lock


class CheckedImageDataset(ImageDataset):
    """timm's ``ImageDataset`` (same arguments and items) that never returns another sample in place
    of one that cannot be decoded.

    Args:
        skip_bad_images: False: a bad image raises ``BadImageError``; True: ``dataset[i]`` is None
            for it (see :func:`drop_missing`), its path goes to ``skip_log`` once, one warning.
        skip_log: file of skipped paths (one a line), shared by workers and processes.
        Other arguments: timm's ``ImageDataset`` (``root``, ``reader``, ``input_img_mode``, ...).
    """

    def __init__(self, *args, skip_bad_images: bool = False, skip_log: Optional[PathLike] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_bad_images = bool(skip_bad_images)
        self.skip_log = SkipLog(skip_log)

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, skip_bad_images: bool = False,
                     skip_log: Optional[PathLike] = None) -> 'CheckedImageDataset':
        """The same dataset (reader, transforms, options) as a ``CheckedImageDataset``."""
        out = cls.__new__(cls)
        out.__dict__.update(dataset.__dict__)
        out.skip_bad_images = bool(skip_bad_images)
        out.skip_log = SkipLog(skip_log)
        return out

    def _name(self, index: int) -> str:
        try:
            return str(self.reader.filename(index, basename=False, absolute=True))
        except Exception:  # noqa: BLE001 -- readers without file names (hfds)
            return f'sample {index} of {self.reader.root if hasattr(self.reader, "root") else "the dataset"}'

    def _load(self, index: int):
        name = self._name(index)
        try:
            file, target, *features = self.reader[index]
        except OSError as e:
            raise bad_image(name, e) from e
        try:
            if self.load_bytes:
                img = file.read()
            else:
                img = load_image(file, self.input_img_mode, name=name)
        except OSError as e:
            raise bad_image(name, e) from e
        finally:
            close = getattr(file, 'close', None)
            if close is not None:
                close()
        return img, target, features

    def __getitem__(self, index: int):
        try:
            img, target, features = self._load(index)
        except BadImageError as e:
            if not self.skip_bad_images:
                raise
            if self.skip_log.record(e.path or self._name(index)):
                _logger.warning('skipped for the rest of the run: %s', e)
            return None
        if self.transform is not None:
            img = self.transform(img)
        if target is None:
            target = -1
        elif self.target_transform is not None:
            target = self.target_transform(target)
        if self.additional_features is None:
            return img, target
        return img, target, *features


class DropMissing:
    """``collate_fn`` wrapper that leaves out ``None`` samples (skipped bad images) and collates the
    rest with the wrapped ``collate_fn`` (torch's ``default_collate`` when None, or e.g.
    ``LabelPoolingCollate``); a batch whose samples were all skipped collates to ``None``.
    ``even=True`` keeps batches even when a sample was dropped (drops one more).
    Picklable (spawn workers); other attributes are the wrapped collate's."""

    def __init__(self, collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None, even: bool = False):
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.even = bool(even)

    def __call__(self, batch: Sequence[Any]) -> Any:
        kept = [s for s in batch if s is not None]
        if self.even and len(kept) < len(batch) and len(kept) % 2:
            kept = kept[:-1]  # Mixup/CutMix need an even batch: one more sample waits for next epoch
        return self.collate_fn(kept) if kept else None

    def __getattr__(self, name: str) -> Any:
        collate = self.__dict__.get('collate_fn')
        if collate is None or name.startswith('__'):
            raise AttributeError(name)
        return getattr(collate, name)


def drop_missing(collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None, even: bool = False) -> DropMissing:
    """``collate_fn`` (default: torch's ``default_collate``) made to drop ``None`` samples; see
    :class:`DropMissing`. ``even``: when a drop leaves an odd batch, drop one more sample (for
    Mixup/CutMix, which need an even batch)."""
    if isinstance(collate_fn, DropMissing):
        return DropMissing(collate_fn.collate_fn, even=even or collate_fn.even)
    return DropMissing(collate_fn, even=even)
