"""Label-map encoding: storage dtypes, uint8 quantization, class-id dtype, validation.

A label map is ``scores [K, H, W]`` (the annotator's logits, descending over K at every cell)
and ``classes [K, H, W]`` (the class index of each score). On disk each map is one row:

* ``scores``: the K*H*W scores, stored as ``float32``, ``float16`` or ``uint8``: a fixed-shape
  ``[K, H, W]`` array (layout 2, see ``writer.LAYOUT_FIXED``) or, in folders written before it,
  one flat list in ``[K, H, W]`` (C) order (layout 1);
* ``classes``: the K*H*W class ids, same layout and order, in the smallest integer type that holds
  ``num_classes`` (``uint8`` up to 256 classes, ``int16`` up to 32768, else ``int32``);
* ``uint8`` only: ``offset`` and ``scale`` (float32, one pair per map). Quantization is a
  per-map affine min/max code: ``offset = min(scores)``, ``scale = (max - min) / 255``,
  ``q = round((s - offset) / scale)``, decoded as ``s = offset + scale * q``; the decoding
  error is at most ``scale / 2`` for every score.

The card records the shape (``label_maps.topk`` / ``map_size``) and the layout (``layout_version``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from timm_multilabel.errors import UserError

__all__ = [
    'MAP_DTYPES', 'FLOAT16_MAX', 'class_id_dtype', 'EncodedMaps', 'encode_maps', 'decode_scores',
    'check_maps',
]

MAP_DTYPES = ('float16', 'float32', 'uint8')
FLOAT16_MAX = float(np.finfo(np.float16).max)


def class_id_dtype(num_classes: int) -> np.dtype:
    """Smallest integer dtype that holds class ids ``0 .. num_classes - 1``."""
    if num_classes <= 0:
        raise UserError(f'label maps: num_classes must be positive, got {num_classes}')
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 32768:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


@dataclass
class EncodedMaps:
    """N maps ready for a Parquet shard: ``scores [N, K*H*W]`` in the storage dtype,
    ``classes [N, K*H*W]`` in the class-id dtype, for uint8 ``offset`` / ``scale`` ``[N]``, and the
    map shape ``(K, H, W)``."""
    scores: np.ndarray
    classes: np.ndarray
    offset: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    shape: Optional[Tuple[int, int, int]] = None


def check_maps(
        scores: Tensor,
        classes: Tensor,
        num_classes: int,
        dtype: str = 'float32',
        image_ids: Optional[Sequence[str]] = None,
        where: str = 'label maps',
) -> None:
    """Raise ``UserError`` if ``scores [N, K, H, W]`` / ``classes [N, K, H, W]`` cannot be stored:
    shapes differ, non-finite scores, class ids outside ``[0, num_classes)``, or float16 overflow."""
    if scores.ndim != 4 or tuple(scores.shape) != tuple(classes.shape):
        raise UserError(f'{where}: expected scores and classes of the same shape [N, K, H, W], '
                        f'got {tuple(scores.shape)} and {tuple(classes.shape)}')
    if dtype not in MAP_DTYPES:
        raise UserError(f'{where}: unknown dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')

    if 0 in tuple(scores.shape[1:]):
        raise UserError(f'{where}: maps of shape [K, H, W] = {list(scores.shape[1:])} hold no scores; '
                        f'K, H and W must be >= 1')

    def _name(n: int) -> str:
        return repr(image_ids[n]) if image_ids is not None else f'#{n}'

    numel = int(np.prod(tuple(scores.shape[1:])))
    flat = scores.reshape(scores.shape[0], numel)
    bad = ~torch.isfinite(flat).all(dim=1)
    if bad.any():
        raise UserError(f'{where}: map of image {_name(int(bad.nonzero()[0]))} has NaN or inf scores')
    if dtype == 'float16':
        over = flat.abs().amax(dim=1) > FLOAT16_MAX
        if over.any():
            raise UserError(f'{where}: map of image {_name(int(over.nonzero()[0]))} has scores beyond the '
                            f'float16 range (+-{FLOAT16_MAX:g}); use --dtype float32 or uint8')
    cflat = classes.reshape(classes.shape[0], numel)
    if cflat.is_floating_point():
        frac = (cflat != cflat.round()).any(dim=1)
        if frac.any():
            raise UserError(f'{where}: map of image {_name(int(frac.nonzero()[0]))} has non-integer class ids')
    out = ((cflat < 0) | (cflat >= num_classes)).any(dim=1)
    if out.any():
        raise UserError(f'{where}: map of image {_name(int(out.nonzero()[0]))} has class ids outside '
                        f'[0, {num_classes})')


def encode_maps(
        scores: Tensor,
        classes: Tensor,
        dtype: str,
        num_classes: int,
        image_ids: Optional[Sequence[str]] = None,
) -> EncodedMaps:
    """Encode ``scores [N, K, H, W]`` / ``classes [N, K, H, W]`` for storage (validated first)."""
    check_maps(scores, classes, num_classes, dtype, image_ids)
    n, numel = scores.shape[0], int(np.prod(tuple(scores.shape[1:])))
    shape = tuple(int(v) for v in scores.shape[1:])
    s = scores.detach().to('cpu', torch.float32).reshape(n, numel).numpy()
    c = classes.detach().to('cpu').reshape(n, numel).numpy().astype(class_id_dtype(num_classes))
    if dtype == 'float32':
        return EncodedMaps(np.ascontiguousarray(s), c, shape=shape)
    if dtype == 'float16':
        return EncodedMaps(s.astype(np.float16), c, shape=shape)
    lo = s.min(axis=1) if s.shape[1] else np.zeros(n, np.float32)
    hi = s.max(axis=1) if s.shape[1] else np.zeros(n, np.float32)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.rint((s - lo[:, None]) / safe[:, None])
    q = np.clip(q, 0, 255).astype(np.uint8)
    return EncodedMaps(q, c, offset=lo.astype(np.float32), scale=scale, shape=shape)


def decode_scores(stored: np.ndarray, offset: Optional[np.ndarray] = None,
                  scale: Optional[np.ndarray] = None) -> np.ndarray:
    """Stored scores ``[N, ...]`` -> float32 logits (uint8 codes are dequantized with
    ``offset [N]`` / ``scale [N]``: ``offset + scale * q``)."""
    if stored.dtype == np.uint8:
        if offset is None or scale is None:
            raise UserError('label maps: uint8 scores need their offset and scale columns')
        shape = (-1,) + (1,) * (stored.ndim - 1)
        return (offset.astype(np.float32).reshape(shape)
                + scale.astype(np.float32).reshape(shape) * stored.astype(np.float32))
    return stored.astype(np.float32)


def read_class_names_file(path: str, num_classes: int) -> List[str]:
    """Class names from a text file, one per line (blank lines skipped); must name every class."""
    try:
        with open(path, encoding='utf-8') as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise UserError(f'cannot read --class-names {path}: {e}') from e
    if len(names) != num_classes:
        raise UserError(f'--class-names {path} has {len(names)} names for {num_classes} classes')
    return names
