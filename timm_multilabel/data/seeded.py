"""Per-sample random streams: a sample's augmentation depends on (seed, epoch, index) only.

The random crop, flip, RandAugment and random-erasing draws of timm's transforms come from the
process-global ``random``, ``numpy.random`` and torch CPU generators, so by default they depend
on which worker loads a sample and on what was loaded before. ``SeededSamples`` seeds those
three generators from ``(seed, epoch, index)`` around each ``__getitem__`` and restores them
afterwards. A sample then looks the same whatever ``--workers`` is, and a run resumed in the
middle of an epoch (skipping the batches it already trained on) draws exactly what an
uninterrupted run would have drawn.

A DataLoader fetches a whole batch through :meth:`SeededSamples.__getitems__`: each item is seeded
as in ``__getitem__``, but the generators are saved and restored once around the batch (saving
numpy's state costs about as much as loading a small image; nothing else draws between the
items of a batch, so the draws are the same).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

_MASK63 = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that differs for every (seed, epoch, index) triple in practice (SplitMix64 mix)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (x ^ (x >> 31)) & _MASK63


def _seed_generators(s: int) -> None:
    random.seed(s)
    np.random.seed(s & 0xFFFFFFFF)
    torch.default_generator.manual_seed(s)  # the CPU generator only: CUDA streams stay untouched


@contextmanager
def _global_generators_kept() -> Iterator[None]:
    """Restores the ``random``, ``numpy.random`` and torch CPU generators on exit."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


@contextmanager
def seeded_generators(s: int) -> Iterator[None]:
    """Seeds the ``random``, ``numpy.random`` and torch CPU generators with ``s`` for the block,
    then restores them."""
    with _global_generators_kept():
        _seed_generators(s)
        yield


class SeededSamples(Dataset):
    """Wraps a map-style dataset so each item's random draws are a function of (seed, epoch, index).

    Call :meth:`set_epoch` at the start of each epoch (train.py does, through the loader). Other
    attributes are those of the wrapped dataset.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        # shared memory: persistent DataLoader workers hold a copy of this object, and still see
        # the epoch the main process sets
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with _global_generators_kept():
            _seed_generators(sample_seed(self.seed, self.epoch, int(index)))
            return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        """The items of one batch (torch's DataLoader fetches batches this way), each drawn exactly as
        ``self[index]`` would; the global generators are saved and restored once per batch."""
        epoch = self.epoch
        items = []
        with _global_generators_kept():
            for index in indices:
                _seed_generators(sample_seed(self.seed, epoch, int(index)))
                items.append(self.dataset[index])
        return items

    def __getattr__(self, name: str) -> Any:
        if name in ('dataset', '_epoch'):  # not yet set (unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.dataset, name)
