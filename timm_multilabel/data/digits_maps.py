"""Oracle label maps of the digit sets: the maps a perfect annotator would write, and how close a map is to them.

ReLabel's pipeline in miniature (Yun et al., 2021, Sec. 3.1 and Appendix B); this module is its data
side, on tensors only. Cell ``(r, c)`` of a ``grid x grid`` oracle map (or a multiple) gets logit
``logit`` for the digit drawn there and ``fill`` for every other class; cells without a digit
(``DigitsMain``'s empty cells) get ``fill`` for every class, which is *neutral*: the same logit for all
classes adds nothing to any class when LabelPooling averages logits. ``fill`` must be the value
training uses for classes outside a cell's top-K (train.py ``--relabel-fill``, default 0).

Why the scale of the logits matters: LabelPooling averages the map's *logits* over the crop and then
takes a softmax, so a class covering a fraction ``a`` of the crop contributes ``a * logit``. On a whole
canvas where the main digit covers a quarter, ``logit = 16`` gives it a pooled logit of 4 against 1 for
a one-cell distractor (p ~ 0.8), while ``logit = 6`` (a "calibrated" 99% cell) gives 1.5 against 0.4: a
target close to uniform.

Writing the maps as a label-map dataset folder: :mod:`timm_multilabel.relabel.digit_maps`; the machine
annotator that writes real (non-oracle) maps: :mod:`timm_multilabel.training.digit_annotator`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .digits_grid import _render_cells, load_source_digits

__all__ = ['DEFAULT_ORACLE_LOGIT', 'oracle_maps', 'cell_accuracy', 'render_single_digits']

DEFAULT_ORACLE_LOGIT = 16.0


def _cell_digits(dataset: Any, indices: Sequence[int]) -> np.ndarray:
    """int64 [N, g, g]: each sample's cell digits (-1 = no digit)."""
    if not callable(getattr(dataset, 'cell_digits', None)):
        raise UserError(f'{type(dataset).__name__} has no cell_digits(i); oracle maps need known cells')
    return np.stack([np.asarray(dataset.cell_digits(int(i)), dtype=np.int64) for i in indices])


def oracle_maps(
        dataset: Any,
        indices: Optional[Sequence[int]] = None,
        map_size: Optional[int] = None,
        topk: int = 5,
        logit: float = DEFAULT_ORACLE_LOGIT,
        fill: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """Oracle label maps of ``dataset`` (a ``DigitsGrid`` or ``DigitsMain``) from its known cells.

    Args:
        dataset: has ``grid``, ``num_classes`` and ``cell_digits(i) -> int [grid, grid]`` (-1 = empty).
        indices: samples to map (default all).
        map_size: map side H = W, a multiple of ``grid`` (default ``grid``: one map cell per digit cell).
        topk: K classes stored per cell: the cell's digit first, then other classes at ``fill``.
        logit: score of the digit in its cells.
        fill: score of every other class (and of all classes in empty cells).

    Returns:
        ``scores [N, K, H, W]`` float32 (descending over K) and ``classes [N, K, H, W]`` int64;
        row 0 is the top of the image, column 0 the left.
    """
    grid = int(dataset.grid)
    num_classes = int(dataset.num_classes)
    size = grid if map_size is None else int(map_size)
    if size < grid or size % grid:
        raise UserError(f'oracle maps: map_size={map_size} must be a positive multiple of the grid ({grid})')
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= num_classes:
        raise UserError(f'oracle maps: topk must be an int in [1, {num_classes}], got {topk!r}')
    if not (math.isfinite(logit) and math.isfinite(fill)) or logit <= fill:
        raise UserError(f'oracle maps: logit ({logit}) must be finite and above fill ({fill})')
    indices = range(len(dataset)) if indices is None else list(indices)
    digits = _cell_digits(dataset, indices)  # [N, g, g]
    rep = size // grid
    digits = digits.repeat(rep, axis=1).repeat(rep, axis=2)  # [N, H, W]
    n = digits.shape[0]
    present = digits >= 0
    top = np.where(present, digits, 0)  # [N, H, W]
    # the other K-1 classes in ascending order, skipping the cell's digit (any K-1 would do: all at fill)
    others = np.arange(topk - 1)[None, :, None, None] + (np.arange(topk - 1)[None, :, None, None] >= top[:, None])
    classes = np.concatenate([top[:, None], others], axis=1)  # [N, K, H, W]
    # an empty cell: classes 0..K-1, all at fill
    classes = np.where(present[:, None], classes, np.arange(topk)[None, :, None, None])
    scores = np.full(classes.shape, float(fill), dtype=np.float32)
    scores[:, 0] = np.where(present, float(logit), float(fill))
    return torch.from_numpy(scores), torch.from_numpy(classes.astype(np.int64))


def render_single_digits(indices: Sequence[int], img_size: int) -> Tensor:
    """Source digits (indices into ``load_source_digits()``) as white-on-black float images in [0, 1],
    ``[N, 1, img_size, img_size]``, upscaled with nearest neighbour as the canvases draw them."""
    images, _ = load_source_digits()
    cells = _render_cells(images[np.asarray(indices, dtype=np.int64)], int(img_size))
    return torch.from_numpy(cells).float().div_(255.0)[:, None]



def cell_accuracy(dataset: Any, scores: Tensor, classes: Tensor, indices: Optional[Sequence[int]] = None
                  ) -> Dict[str, float]:
    """How often a map's top class at each cell equals the digit drawn there (maps of ``grid x grid``).

    ``scores`` / ``classes`` ``[N, K, g, g]`` for ``indices`` (default the first N samples). Returns
    ``digit_cells`` (all cells holding a digit), and for ``DigitsMain`` also ``main_cells`` and
    ``distractor_cells``, in percent.
    """
    n = scores.shape[0]
    indices = list(range(n)) if indices is None else list(indices)
    digits = torch.from_numpy(_cell_digits(dataset, indices))  # [N, g, g]
    if tuple(classes.shape[-2:]) != tuple(digits.shape[-2:]):
        raise UserError(f'cell_accuracy: maps of {tuple(classes.shape[-2:])} cells for a grid of '
                        f'{tuple(digits.shape[-2:])}')
    top = classes[:, 0]
    right = (top == digits)
    out = {'digit_cells': float(right[digits >= 0].float().mean() * 100)}
    in_main = getattr(dataset, '_in_main', None)
    if in_main is not None:
        main = torch.from_numpy(np.asarray(in_main)[indices])
        out['main_cells'] = float(right[main].float().mean() * 100)
        dis = (digits >= 0) & ~main
        out['distractor_cells'] = float(right[dis].float().mean() * 100) if bool(dis.any()) else float('nan')
    return out

