"""digits-grid: the MILe paper's multi-label MNIST (Sec. 4.x, Table 6, Fig. 4) from scikit-learn's 8x8 digits.

Each sample is a ``grid x grid`` (default 3x3) mosaic of digits. Its single training label is the
digit in one cell, the cell drawn with probability ``center_prob`` (0.6) for the center and the rest
shared equally by the others (0.05 each for 3x3); its multi-label ground truth is the set of digits
present. Digits may repeat inside a grid, as in the paper.

Source digits: scikit-learn's bundled ``load_digits()`` data (1797 images, offline; the CSV is read
directly, which skips sklearn's slow import) is split once into disjoint train / test pools by a
stratified split (per class, a permutation seeded by ``split_seed=0`` sends 25% to test: 1347 / 450
digits), independent of the grid ``seed``, so train and test grids never share a source digit.
Cells draw source digits uniformly with replacement from their split's pool. Everything is decided
at ``__init__`` with vectorised numpy from ``np.random.default_rng([seed, split])``; images are
rendered lazily in ``__getitem__`` (a gather + reshape of pre-rendered cells).

Rendering: an 8x8 digit (values 0..16, ink high) is scaled to 0..255 and upscaled to ``cell_size`` px
with nearest-neighbour (crisp, exact for multiples of 8); ink is white on black, as MNIST. The image
is an RGB PIL image of ``grid*cell_size`` px square (gray replicated to 3 channels), so timm's
transforms apply unchanged.

Geometry (for oracle label maps): cell ``(r, c)`` (row 0 = top, column 0 = left) covers the
normalized box ``(c/grid, r/grid, (c+1)/grid, (r+1)/grid)`` in ``(x1, y1, x2, y2)``; see ``cell_box``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data
from PIL import Image

from ..errors import UserError

__all__ = ['DigitsGrid', 'load_source_digits', 'source_split_indices']

_SPLITS = ('train', 'test')
DEFAULT_NUM_SAMPLES = {'train': 10000, 'test': 2000}


def _digits_csv_path() -> Optional[str]:
    """scikit-learn's bundled ``datasets/data/digits.csv.gz``, found without importing sklearn (slow)."""
    spec = importlib.util.find_spec('sklearn')
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(base, 'datasets', 'data', 'digits.csv.gz')
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=1)
def load_source_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images uint8 [1797, 8, 8] (values 0..16), targets int64 [1797]."""
    path = _digits_csv_path()
    if path is not None:  # the file ``sklearn.datasets.load_digits`` reads: 64 pixels then the target per row
        data = np.loadtxt(path, delimiter=',', dtype=np.int64)
        images, targets = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits
        d = load_digits()
        images, targets = np.asarray(d.images), np.asarray(d.target)
    images = np.asarray(images).round().astype(np.uint8)
    targets = np.asarray(targets).astype(np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


@functools.lru_cache(maxsize=8)
def _split_pools(test_fraction: float, split_seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class, a seeded permutation puts round(test_fraction * count) digits in test."""
    _, targets = load_source_digits()
    rng = np.random.default_rng(split_seed)
    test_parts = []
    for cls in range(int(targets.max()) + 1):
        members = np.flatnonzero(targets == cls)
        n_test = int(round(test_fraction * len(members)))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.setdiff1d(np.arange(len(targets)), test_idx)
    train_idx.setflags(write=False)
    test_idx.setflags(write=False)
    return train_idx, test_idx


def source_split_indices(split: str, test_fraction: float = 0.25, split_seed: int = 0) -> np.ndarray:
    """Sorted indices into ``load_source_digits()`` of the source digits that ``split`` may use [M]."""
    if split not in _SPLITS:
        raise UserError(f"digits-grid split {split!r}: expected one of {', '.join(_SPLITS)}")
    train_idx, test_idx = _split_pools(float(test_fraction), int(split_seed))
    return train_idx if split == 'train' else test_idx


def _render_cells(images: np.ndarray, cell_size: int) -> np.ndarray:
    """uint8 [M, 8, 8] in 0..16 -> uint8 [M, cell_size, cell_size] in 0..255 (nearest upscale)."""
    scaled = np.clip(np.round(images.astype(np.float32) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    src = scaled.shape[-1]
    # nearest-neighbour sampling at cell pixel centres (an exact repeat when cell_size % 8 == 0)
    pos = ((np.arange(cell_size) + 0.5) * src / cell_size).astype(np.int64).clip(0, src - 1)
    return np.ascontiguousarray(scaled[:, pos][:, :, pos])


class _DigitCanvases(torch.utils.data.Dataset):
    """What the digit data sets share: a ``grid x grid`` canvas of ``cell_size`` px cells per
    sample, a single int label, string image ids, PNG export. Subclasses set ``labels``,
    ``image_ids``, ``grid``, ``cell_size``, ``transform``, ``target_transform`` and implement
    :meth:`image_array`."""
    num_classes: int = 10
    class_names: List[str] = [str(d) for d in range(10)]

    def image_array(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.image_array(index))
        target = int(self.labels[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    @property
    def image_size(self) -> int:
        """Side of the square image in pixels."""
        return self.grid * self.cell_size

    @property
    def targets(self) -> np.ndarray:
        """Alias of ``labels`` (torchvision's name)."""
        return self.labels

    def image_id(self, index: int) -> str:
        """Stable id of sample ``index``: ``'<split>/<index:06d>'`` (label maps are keyed by it)."""
        return self.image_ids[index]

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        """``image_id + '.png'`` (timm's ``filename`` signature; there is no file on disk)."""
        name = self.image_ids[index] + '.png'
        return os.path.basename(name) if basename else name

    def cell_box(self, row: int, col: int) -> Tuple[float, float, float, float]:
        """Normalized box ``(x1, y1, x2, y2)`` of cell (row, col) in the whole image."""
        g = self.grid
        return col / g, row / g, (col + 1) / g, (row + 1) / g

    def export_image_folder(self, root: str, indices: Optional[Sequence[int]] = None) -> List[str]:
        """Write sample images as PNG files ``root/<image_id>.png`` (atomic writes); return their paths.

        A folder annotator keying images by path relative to ``root`` without extension thus gets
        exactly ``image_id(i)``.
        """
        if os.path.exists(root) and not os.path.isdir(root):
            raise UserError(f'{root}: exists and is not a directory')
        indices = range(len(self)) if indices is None else [int(i) for i in indices]
        paths = []
        for i in indices:
            if not 0 <= i < len(self):
                raise UserError(f'export_image_folder: index {i} out of range [0, {len(self)})')
        for i in indices:
            path = os.path.join(root, *self.image_ids[i].split('/')) + '.png'
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix='.png.tmp', dir=folder)
            try:
                with os.fdopen(fd, 'wb') as f:
                    Image.fromarray(self.image_array(i)).save(f, format='PNG')
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            paths.append(path)
        return paths


class DigitsGrid(_DigitCanvases):
    """Grids of scikit-learn digits with a single (noisy) label and a multi-label ground truth.

    Args:
        split: 'train' or 'test' (disjoint source digits).
        num_samples: number of grids; default 10000 for train, 2000 for test.
        seed: grid seed; same seed -> identical cells, labels, images and ids.
        cell_size: pixels per cell side; image side is ``grid * cell_size`` (default 48).
        transform: applied to the PIL image in ``__getitem__``.
        target_transform: applied to the int label in ``__getitem__``.
        grid: cells per side (odd, so a center exists, unless ``label_probs`` is given).
        center_prob: probability that the center cell gives the label; the others share the rest.
        label_probs: optional [grid, grid] probabilities of each cell giving the label (overrides
            ``center_prob``; must be >= 0 and sum to 1).
        test_fraction: fraction of the 1797 source digits reserved for the test pool.
        split_seed: seed of the stratified source split (keep fixed to keep pools disjoint).

    Sample ``i``: ``(image, label)``; image RGB PIL [S, S], label int in 0..9.
    """

    def __init__(
            self,
            split: str = 'train',
            num_samples: Optional[int] = None,
            seed: int = 0,
            cell_size: int = 16,
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
            grid: int = 3,
            center_prob: float = 0.6,
            label_probs: Optional[Sequence[Sequence[float]]] = None,
            test_fraction: float = 0.25,
            split_seed: int = 0,
    ):
        if split not in _SPLITS:
            raise UserError(f"digits-grid split {split!r}: expected one of {', '.join(_SPLITS)}")
        if num_samples is None:
            num_samples = DEFAULT_NUM_SAMPLES[split]
        if int(num_samples) < 1:
            raise UserError(f'digits-grid num_samples={num_samples}: must be >= 1')
        if int(cell_size) < 1:
            raise UserError(f'digits-grid cell_size={cell_size}: must be >= 1')
        if int(grid) < 1:
            raise UserError(f'digits-grid grid={grid}: must be >= 1')
        if not 0.0 < float(test_fraction) < 1.0:
            raise UserError(f'digits-grid test_fraction={test_fraction}: must be in (0, 1)')
        grid = int(grid)
        probs = self._cell_probs(grid, center_prob, label_probs)

        self.split = split
        self.seed = int(seed)
        self.cell_size = int(cell_size)
        self.grid = grid
        self.transform = transform
        self.target_transform = target_transform
        self.cell_probs = probs  # float64 [grid, grid]

        images, targets = load_source_digits()
        pool = source_split_indices(split, test_fraction, split_seed)
        n, cells = int(num_samples), grid * grid
        rng = np.random.default_rng([self.seed, _SPLITS.index(split)])
        # global indices into load_source_digits() of each cell's digit: [N, grid, grid]
        self.source_indices = pool[rng.integers(0, len(pool), size=(n, cells))].reshape(n, grid, grid)
        self.source_indices.setflags(write=False)
        self._cell_digits = targets[self.source_indices]  # [N, grid, grid]
        self._cell_digits.setflags(write=False)
        flat_pos = rng.choice(cells, size=n, p=probs.reshape(-1))
        self._label_pos = np.stack([flat_pos // grid, flat_pos % grid], axis=1)  # [N, 2] (row, col)
        self.labels = self._cell_digits.reshape(n, cells)[np.arange(n), flat_pos].astype(np.int64)
        multi_hot = np.zeros((n, self.num_classes), dtype=bool)
        multi_hot[np.arange(n)[:, None], self._cell_digits.reshape(n, cells)] = True
        self.multi_hot = multi_hot  # bool [N, 10]
        self.real_labels = [np.flatnonzero(row).tolist() for row in multi_hot]
        self.image_ids = [f'{split}/{i:06d}' for i in range(n)]
        # pre-rendered cells of the whole source set (uint8 [1797, cell, cell]), shared by both splits
        self._cells = _render_cells(images, self.cell_size)

    @staticmethod
    def _cell_probs(grid: int, center_prob: float, label_probs) -> np.ndarray:
        if label_probs is not None:
            probs = np.asarray(label_probs, dtype=np.float64)
            if probs.shape != (grid, grid) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
                raise UserError(
                    f'digits-grid label_probs: expected non-negative [{grid}, {grid}] probabilities '
                    f'summing to 1, got shape {tuple(probs.shape)} sum {probs.sum():.4g}')
            return probs / probs.sum()
        if grid % 2 == 0:
            raise UserError(f'digits-grid grid={grid}: needs an odd size for a center cell (or label_probs)')
        if not 0.0 <= float(center_prob) <= 1.0:
            raise UserError(f'digits-grid center_prob={center_prob}: must be in [0, 1]')
        cells = grid * grid
        if cells == 1:
            return np.ones((1, 1))
        probs = np.full(cells, (1.0 - float(center_prob)) / (cells - 1))
        probs[cells // 2] = float(center_prob)
        return probs.reshape(grid, grid)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(split={self.split!r}, num_samples={len(self)}, seed={self.seed}, '
                f'grid={self.grid}, cell_size={self.cell_size})')

    def image_array(self, index: int) -> np.ndarray:
        """The grid image as uint8 [S, S, 3] (row 0 = top)."""
        g, s = self.grid, self.cell_size
        cells = self._cells[self.source_indices[index]]  # [g, g, s, s]
        gray = cells.transpose(0, 2, 1, 3).reshape(g * s, g * s)
        return np.repeat(gray[:, :, None], 3, axis=2)

    def cell_digits(self, index: int) -> np.ndarray:
        """Digit (0..9) at each cell of sample ``index``: int [grid, grid], [r, c], row 0 = top."""
        return self._cell_digits[index].copy()

    def label_position(self, index: int) -> Tuple[int, int]:
        """(row, col) of the cell whose digit is the single label of sample ``index``."""
        r, c = self._label_pos[index]
        return int(r), int(c)
