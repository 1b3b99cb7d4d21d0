"""digits-main: an ImageNet-like toy set of scikit-learn digits: one main object among small other ones.

ReLabel's argument (Yun et al., 2021, Sec. 2) is about ImageNet's *shape*: one main object whose
label is right for the whole image, other objects around it, and random crops that often miss the
main object (8% of ResNet-50's random crops miss it entirely) yet still carry its label. This set
has that shape at toy scale (defaults):

* the canvas is ``grid x grid`` cells of ``cell_size`` px (4 x 4 cells of 12 px: 48 px);
* the **main object** covers a ``main_cells x main_cells`` block (2 x 2: a quarter of the canvas)
  at a uniformly drawn position (any of the ``(grid - main_cells + 1)^2``, or only block-aligned
  ones with ``aligned``). ``main_style='cluster'`` (default) fills the block with four instances of
  the main digit (four source digits of one class: an object made of parts, each recognizable by a
  one-cell annotator); ``'big'`` draws one digit over the block;
* each other cell holds a one-cell **distractor** digit with probability ``distractor_prob`` (0.5);
  with ``distinct`` (default) the distractors are of distinct classes, none of the main's ("other
  objects"; at most ``num_classes - 1`` of them), so the main object always covers the most cells;
* the single label is the main digit, always; the multi-label ground truth (``real_labels``) is
  the set of all digits present.

With timm's default random-resized crop (scale 0.08-1, ratio 3/4-4/3) about 5% of the crops miss
the main object entirely and about 40% hold less than half of it.

Source digits come from the same disjoint train/test pools as :class:`DigitsGrid`
(``source_split_indices``: stratified, ``split_seed=0``), so train and test canvases never share a
source digit. Everything is drawn at ``__init__`` from ``np.random.default_rng([seed, split, 7])``;
images are rendered in ``__getitem__``.

Geometry (for oracle label maps): ``cell_digits(i)`` is int ``[grid, grid]``, row 0 = top, column
0 = left, the main digit in every cell of its block, -1 for empty cells; cell ``(r, c)`` covers the
normalized box ``(c / grid, r / grid, (c + 1) / grid, (r + 1) / grid)`` (``cell_box``).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ..errors import UserError
from .digits_grid import _DigitCanvases, _render_cells, load_source_digits, source_split_indices

__all__ = ['DigitsMain', 'DEFAULT_NUM_SAMPLES']

_SPLITS = ('train', 'test')
DEFAULT_NUM_SAMPLES = {'train': 8000, 'test': 2000}
EMPTY = -1
MAIN_STYLES = ('big', 'cluster')


class DigitsMain(_DigitCanvases):
    """Canvases of one large main digit (the label) among small distractor digits.

    Args:
        split: 'train' or 'test' (disjoint source digits).
        num_samples: number of canvases; default 8000 for train, 2000 for test.
        seed: canvas seed; same seed -> identical canvases, labels and ids.
        cell_size: pixels per cell side; the image is ``grid * cell_size`` px square.
        grid: cells per side.
        main_cells: side of the main object's square block, in cells (``1 <= main_cells <= grid``).
        distractor_prob: probability that a cell outside the main block holds a distractor digit.
        aligned: main block only at positions that are multiples of ``main_cells``.
        main_style: 'cluster' (main_cells**2 instances of the main digit) or 'big' (one digit, scaled).
        distinct: distractors of distinct classes other than the main's (else any digit, repeats allowed).
        transform: applied to the PIL image in ``__getitem__``.
        target_transform: applied to the int label in ``__getitem__``.
        test_fraction, split_seed: the source-digit split (as :class:`DigitsGrid`).

    Sample ``i``: ``(image, label)``; image RGB PIL [S, S] (white ink on black), label int 0..9.
    """

    def __init__(
            self,
            split: str = 'train',
            num_samples: Optional[int] = None,
            seed: int = 0,
            cell_size: int = 12,
            grid: int = 4,
            main_cells: int = 2,
            distractor_prob: float = 0.5,
            aligned: bool = False,
            main_style: str = 'cluster',
            distinct: bool = True,
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
            test_fraction: float = 0.25,
            split_seed: int = 0,
    ):
        if split not in _SPLITS:
            raise UserError(f"digits-main split {split!r}: expected one of {', '.join(_SPLITS)}")
        num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else int(num_samples)
        if num_samples < 1:
            raise UserError(f'digits-main num_samples={num_samples}: must be >= 1')
        if int(cell_size) < 1 or int(grid) < 1:
            raise UserError(f'digits-main cell_size={cell_size}, grid={grid}: must be >= 1')
        if not 1 <= int(main_cells) <= int(grid):
            raise UserError(f'digits-main main_cells={main_cells}: must be in [1, grid={grid}]')
        if not 0.0 <= float(distractor_prob) <= 1.0:
            raise UserError(f'digits-main distractor_prob={distractor_prob}: must be in [0, 1]')
        self.split = split
        self.seed = int(seed)
        self.cell_size = int(cell_size)
        self.grid = g = int(grid)
        self.main_cells = m = int(main_cells)
        self.distractor_prob = float(distractor_prob)
        self.transform = transform
        self.target_transform = target_transform

        images, targets = load_source_digits()
        pool = source_split_indices(split, test_fraction, split_seed)
        n = num_samples
        rng = np.random.default_rng([self.seed, _SPLITS.index(split), 7])
        if main_style not in MAIN_STYLES:
            raise UserError(f"digits-main main_style={main_style!r}: expected one of {', '.join(MAIN_STYLES)}")
        self.main_style = main_style
        self.aligned = bool(aligned)
        if self.aligned and g % m:
            raise UserError(f'digits-main aligned=True needs grid ({g}) to be a multiple of main_cells ({m})')
        step = m if self.aligned else 1
        positions = (g - m) // step + 1
        flat = rng.integers(0, positions * positions, size=n)
        self._main_pos = np.stack([flat // positions, flat % positions], axis=1) * step  # [N, 2] (row, col) top-left
        self.main_source = pool[rng.integers(0, len(pool), size=n)]  # [N] indices into load_source_digits()
        self.labels = targets[self.main_source].astype(np.int64)  # [N]
        by_class = [pool[targets[pool] == k] for k in range(self.num_classes)]
        counts = np.array([len(b) for b in by_class])
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat_pool = np.concatenate(by_class)

        def draw_of_class(cls: np.ndarray) -> np.ndarray:  # a random pool digit of each class in ``cls``
            pick = (rng.random(cls.shape) * counts[cls]).astype(np.int64)
            return flat_pool[offsets[cls] + pick]

        if main_style == 'cluster':  # m x m instances of the main class: the first, then others of that class
            cluster = draw_of_class(np.broadcast_to(self.labels[:, None, None], (n, m, m)))
            cluster[:, 0, 0] = self.main_source
            self.main_cluster_source = cluster  # [N, m, m]
            self.main_cluster_source.setflags(write=False)
        # distractors: a source digit per cell (ignored where empty or under the main block)
        self.cell_source = pool[rng.integers(0, len(pool), size=(n, g, g))]  # [N, g, g]
        present = rng.random((n, g, g)) < self.distractor_prob
        rows = np.arange(g)[None, :, None]
        cols = np.arange(g)[None, None, :]
        r0, c0 = self._main_pos[:, 0, None, None], self._main_pos[:, 1, None, None]
        self._in_main = (rows >= r0) & (rows < r0 + m) & (cols >= c0) & (cols < c0 + m)  # [N, g, g]
        self._has_distractor = present & ~self._in_main
        self.distinct = bool(distinct)
        if self.distinct:  # distractors of distinct classes, none of the main class (at most C - 1 of them)
            keys = np.where(self._has_distractor.reshape(n, -1), rng.random((n, g * g)), np.inf)
            rank = np.argsort(np.argsort(keys, axis=1), axis=1).reshape(n, g, g)
            self._has_distractor &= rank < self.num_classes - 1
            class_keys = rng.random((n, self.num_classes))
            class_keys[np.arange(n), self.labels] = np.inf
            order = np.argsort(class_keys, axis=1)  # [N, C]: the other classes in random order, main last
            cls = np.take_along_axis(order, np.minimum(rank, self.num_classes - 2).reshape(n, -1), axis=1)
            self.cell_source = draw_of_class(cls.reshape(n, g, g))
        digits = np.where(self._has_distractor, targets[self.cell_source], EMPTY)
        self._cell_digits = np.where(self._in_main, self.labels[:, None, None], digits).astype(np.int64)
        for a in (self._main_pos, self.main_source, self.labels, self.cell_source, self._in_main,
                  self._has_distractor, self._cell_digits):
            a.setflags(write=False)
        multi_hot = np.zeros((n, self.num_classes), dtype=bool)
        nz = self._cell_digits.reshape(n, -1)
        rr, cc = np.nonzero(nz >= 0)
        multi_hot[rr, nz[rr, cc]] = True
        self.multi_hot = multi_hot  # bool [N, 10]
        self.real_labels = [np.flatnonzero(row).tolist() for row in multi_hot]
        self.image_ids = [f'{split}/{i:06d}' for i in range(n)]
        self._small = _render_cells(images, self.cell_size)  # uint8 [1797, cell, cell]
        if main_style == 'big':
            self._big = _render_cells(images, self.cell_size * m)  # uint8 [1797, m*cell, m*cell]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(split={self.split!r}, num_samples={len(self)}, seed={self.seed}, '
                f'grid={self.grid}, main_cells={self.main_cells}, cell_size={self.cell_size}, '
                f'distractor_prob={self.distractor_prob}, main_style={self.main_style!r}, distinct={self.distinct})')

    def image_array(self, index: int) -> np.ndarray:
        """The canvas as uint8 [S, S, 3] (row 0 = top)."""
        g, s, m = self.grid, self.cell_size, self.main_cells
        cells = self._small[self.cell_source[index]] * self._has_distractor[index][:, :, None, None]  # [g, g, s, s]
        gray = np.ascontiguousarray(cells.transpose(0, 2, 1, 3).reshape(g * s, g * s))
        r, c = self._main_pos[index]
        if self.main_style == 'big':
            main = self._big[self.main_source[index]]
        else:
            main = self._small[self.main_cluster_source[index]].transpose(0, 2, 1, 3).reshape(m * s, m * s)
        gray[r * s:(r + m) * s, c * s:(c + m) * s] = main
        return np.repeat(gray[:, :, None], 3, axis=2)

    def cell_digits(self, index: int) -> np.ndarray:
        """Digit at each cell, int [grid, grid] ([r, c], row 0 = top): the main digit over its
        block, distractors elsewhere, -1 for empty cells."""
        return self._cell_digits[index].copy()

    def main_position(self, index: int) -> Tuple[int, int]:
        """(row, col) of the top-left cell of the main digit's block."""
        r, c = self._main_pos[index]
        return int(r), int(c)

    def main_box(self, index: int) -> Tuple[float, float, float, float]:
        """Normalized box ``(x1, y1, x2, y2)`` of the main digit."""
        r, c = self.main_position(index)
        g, m = self.grid, self.main_cells
        return c / g, r / g, (c + m) / g, (r + m) / g
