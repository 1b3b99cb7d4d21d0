"""Decoding one image: every PIL mode to 8-bit RGB by scaling (never by clipping), and one-line errors.

    load_rgb('a/16bit.png')    -> PIL.Image, mode 'RGB'
    load_rgb('a/truncated.jpg') -> BadImageError('corrupt image a/truncated.jpg (OSError: image file is truncated ...)')

Mode rules (:func:`to_rgb`):

* ``'I;16'``, ``'I;16B'``, ``'I;16L'``, ``'I;16N'`` (16-bit gray): ``value >> 8``, so 0..65535 -> 0..255.
* ``'I'`` (32-bit integer gray, what older PIL made of 16-bit PNGs): taken as 16-bit, clamped to
  0..65535, then ``>> 8``.
* ``'F'`` (32-bit float gray): ``[0, 1]`` scaled to 0..255 when every value is within ``[0, 1]``,
  else taken as 0..255 (PIL's convention) and clamped; NaN -> 0.
* modes with alpha (``'RGBA'``, ``'LA'``, ``'PA'``, ``'P'`` with transparency, ...): composited over
  white, so transparent pixels do not show whatever colour happens to be stored under them.
* everything else (``'L'``, ``'1'``, ``'P'``, ``'CMYK'``, ``'YCbCr'``, ...): PIL's ``convert('RGB')``.

A file that cannot be opened or decoded raises :class:`BadImageError` (a ``UserError``) whose
message is one line naming the file and the decoder's reason. Raised in a DataLoader worker, it
reaches the main process with torch's multi-line "Caught BadImageError in DataLoader worker ..."
text; :func:`bad_image_message` recovers the one line from either form.
"""
from __future__ import annotations

import os
import re
from typing import IO, Optional, Union

import numpy as np
from PIL import Image

from ..errors import UserError

__all__ = ['BadImageError', 'bad_image', 'to_rgb', 'load_rgb', 'load_image', 'bad_image_message', 'error_reason']

PathOrFile = Union[str, os.PathLike, IO[bytes]]

_WHITE = (255, 255, 255)


class BadImageError(UserError):
    """An image file that cannot be opened or decoded. ``str(e)`` is one line:
    ``corrupt image <path> (<ExceptionType>: <decoder's reason>)``; ``path`` and ``reason`` are
    kept as attributes (None when the error was rebuilt from a DataLoader worker's message)."""

    def __init__(self, message: str, path: Optional[str] = None, reason: Optional[str] = None):
        super().__init__(message)
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable with its attributes (multiprocessing pools, spawn workers)
        return type(self), (str(self), self.path, self.reason)


def error_reason(exc: BaseException) -> str:
    """``'<ExceptionType>: <message>'`` on one line (newlines folded, long messages cut)."""
    text = ' '.join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + '...'
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def bad_image(path: str, exc: BaseException) -> BadImageError:
    """The :class:`BadImageError` for ``path`` failing with ``exc`` (``cannot read image`` for an I/O error
    such as a missing file, ``corrupt image`` for a decoder's)."""
    reason = error_reason(exc)
    io_error = isinstance(exc, OSError) and getattr(exc, 'errno', None) is not None  # missing, permission, ...
    what = 'cannot read image' if io_error else 'corrupt image'
    return BadImageError(f'{what} {path} ({reason})', path=path, reason=reason)


def _gray16_to_8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)


def _float_to_8(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.min() >= 0.0 and a.max() <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or (
        img.mode in ('P', 'L', 'RGB') and 'transparency' in img.info)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit ``'RGB'`` by the module's mode rules (the pixels are decoded here)."""
    mode = img.mode
    if mode == 'RGB' and 'transparency' not in img.info:
        return img
    if mode.startswith('I;16'):
        return Image.fromarray(_gray16_to_8(np.asarray(img)), 'L').convert('RGB')
    if mode == 'I':
        return Image.fromarray(_gray16_to_8(np.asarray(img)), 'L').convert('RGB')
    if mode == 'F':
        return Image.fromarray(_float_to_8(np.asarray(img)), 'L').convert('RGB')
    if _has_alpha(img):
        rgba = img.convert('RGBA')
        background = Image.new('RGBA', rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert('RGB')
    return img.convert('RGB')


def load_image(file: PathOrFile, mode: Optional[str] = 'RGB', name: Optional[str] = None) -> Image.Image:
    """Open and fully decode one image, then convert it: ``'RGB'`` by :func:`to_rgb`, another
    ``mode`` (e.g. ``'L'``) from that RGB image, ``None`` / ``''`` as decoded (timm's
    ``input_img_mode``). ``file`` is a path or a binary file object (left open); ``name`` names it
    in the error (default: the path). Raises :class:`BadImageError`."""
    if name is None:
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else str(getattr(file, 'name', '<image>'))
    try:
        with Image.open(file) as img:
            img.load()
            out = to_rgb(img) if mode else img
            if out is img:  # closing img below would discard its pixels
                out = img.copy()
        return out.convert(mode) if mode and mode != 'RGB' else out
    except Exception as e:  # noqa: BLE001 -- any failure to open or decode is the file's
        raise bad_image(name, e) from e


def load_rgb(file: PathOrFile, name: Optional[str] = None) -> Image.Image:
    """One image as 8-bit RGB (:func:`to_rgb`), fully decoded; :class:`BadImageError` if it cannot be."""
    return load_image(file, 'RGB', name=name)


_WORKER_LINE = re.compile(r'^(?:[\w.]+\.)?BadImageError: (.+)$')


def bad_image_message(exc: BaseException) -> Optional[str]:
    """The one-line message of a :class:`BadImageError`, raised in this process or re-raised by a
    DataLoader from a worker ("Caught BadImageError in DataLoader worker process 0. Original
    Traceback ..."), also when chained as the cause/context of another exception; None if ``exc``
    is not about a bad image."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, BadImageError) and '\n' not in text.strip():
            return text.strip()
        if 'BadImageError' in text:
            for line in reversed(text.splitlines()):
                m = _WORKER_LINE.match(line.strip())
                if m:
                    return m.group(1).strip()
        exc = exc.__cause__ or exc.__context__
    return None
