"""Atomic file writes: every file we leave is either the old one or the complete new one.

A write goes to a temporary file in the target's folder (same file system, so the final
``os.replace`` is atomic), gets the usual mode (``0666 & ~umask``, like ``open()``; ``mkstemp``
alone would leave 0600), and replaces the target only when it is complete. A failure or an
interrupt removes the temporary file. Temporary names start with ``.`` and contain ``.tmp-`` so
listings skip them and :func:`remove_stale_temps` can find those a ``kill -9`` left behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, TextIO, Union

from .errors import UserError

PathLike = Union[str, os.PathLike]

TMP_MARK = '.tmp-'
_STALE_TMP = re.compile(r'^\..*\.tmp-(\d+)')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


@contextmanager
def atomic_path(path: PathLike, suffix: str = '') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.

    ``suffix`` keeps an extension on the temporary name for writers that look at it (matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}{TMP_MARK}{os.getpid()}-', suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding='utf-8')


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(o: Any) -> Any:
    if hasattr(o, 'item'):  # numpy / torch scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as indented JSON (numpy/torch scalars as numbers, paths as strings) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + '\n')


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_duplicate(src: PathLike, dst: PathLike) -> None:
    """Make ``dst`` a second name of the file ``src`` (a hard link, as timm's CheckpointSaver does),
    atomically; a copy where the file system has no hard links. Only for files that are replaced,
    never rewritten in place (both names see any in-place write)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: PathLike) -> List[Path]:
    """Remove the temporary files in ``folder`` whose writing process is gone (a ``kill -9``);
    returns what was removed. Files of live processes are left alone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _STALE_TMP.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


LOCK_NAME = '.lock'


class FolderLock:
    """An exclusive lock on ``folder/.lock`` while one run writes into ``folder``, so that a second
    run there (an ``--overwrite`` in another shell, a second launch) is refused in one line instead
    of the two runs writing over each other. Released by :meth:`release`, or by the operating
    system when the process ends (``kill -9`` included: no stale lock is left)."""

    def __init__(self, folder: PathLike, flag: str):
        self.folder = Path(folder)
        self.flag = flag
        self._file: Optional[TextIO] = None

    def acquire(self) -> 'FolderLock':
        """Take the lock (creating the folder); UserError when another live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / LOCK_NAME, 'a+')
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or '?'
            f.close()
            raise UserError(f'{self.flag} {self.folder}: another run (pid {holder}) is writing there; wait for it to '
                            f'end or choose another folder') from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> 'FolderLock':
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
