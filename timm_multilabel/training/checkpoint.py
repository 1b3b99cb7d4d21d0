"""Checkpoints for train.py: timm's checkpoint layout, written atomically, loaded safely.

A checkpoint is a dict with timm's keys (``epoch``, ``arch``, ``state_dict``, ``optimizer``,
``state_dict_ema``, ``metric``, ``version``) plus what an exact resume needs: ``scheduler``,
``task_state`` (MILe phase, counters, teacher), ``rng`` (python, numpy, torch), ``num_updates``
and ``args`` as a plain dict (never an argparse.Namespace, so ``weights_only`` loading works).
A mid-epoch checkpoint (``--checkpoint-every``) also holds ``epoch_progress`` (batches done in the
unfinished ``epoch``, its running loss and seconds).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..checkpoint_files import BEST, LAST, RESUME_PREFER, load_checkpoint_file, resolve_checkpoint_path
from ..fileio import atomic_duplicate, atomic_torch_save

__all__ = [
    'LAST', 'BEST', 'atomic_torch_save', 'load_checkpoint_file', 'resolve_resume_path', 'rng_state',
    'set_rng_state', 'CheckpointKeeper',
]


def rng_state() -> Dict[str, Any]:
    """The python, numpy, torch and CUDA random states, in types ``weights_only`` loading accepts."""
    return {
        'python': random.getstate(),
        'numpy': _numpy_state_to_plain(np.random.get_state()),
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also after a ``torch.save``/``weights_only`` round trip)."""
    random.setstate(_to_python_state(state['python']))
    np.random.set_state(_numpy_state_from_plain(state['numpy']))
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _numpy_state_to_plain(state) -> Dict[str, Any]:
    # Plain types and tensors only, so weights_only loading accepts it.
    name, keys, pos, has_gauss, cached = state
    return {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
            'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)}


def _numpy_state_from_plain(state: Dict[str, Any]):
    return (state['name'], state['keys'].numpy().astype(np.uint32), state['pos'], state['has_gauss'],
            state['cached_gaussian'])


def _to_python_state(state):
    # weights_only loading turns the tuple of python's random state into lists.
    version, internal, gauss = state
    return version, tuple(internal), gauss


def resolve_resume_path(resume: Union[str, Path]) -> Path:
    """``--resume`` takes a checkpoint file or a run folder (its ``last.pth.tar``, else the newest
    ``checkpoint-N.pth.tar``)."""
    return resolve_checkpoint_path(resume, RESUME_PREFER, '--resume')


class CheckpointKeeper:
    """Writes ``checkpoint-<epoch>.pth.tar`` each epoch, keeps the best ``max_history`` by metric,
    and maintains ``last.pth.tar`` and ``model_best.pth.tar`` (timm's CheckpointSaver layout)."""

    def __init__(self, output_dir: Path, decreasing: bool = False, max_history: int = 10):
        self.output_dir = Path(output_dir)
        self.decreasing = decreasing
        self.max_history = max(1, max_history)
        self.history: List[tuple] = []  # (metric, epoch)
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None

    def state(self) -> Dict[str, Any]:
        return {'history': self.history, 'best_metric': self.best_metric, 'best_epoch': self.best_epoch}

    def load_state(self, state: Optional[Dict[str, Any]]) -> None:
        if state:
            self.history = [tuple(h) for h in state.get('history', [])]
            self.best_metric = state.get('best_metric')
            self.best_epoch = state.get('best_epoch')

    def _better(self, a: float, b: Optional[float]) -> bool:
        if b is None:
            return True
        return a < b if self.decreasing else a > b

    def save(self, checkpoint: Dict[str, Any], epoch: int, metric: Optional[float]) -> bool:
        """Save this epoch's checkpoint; returns True when it is the new best."""
        path = self.output_dir / f'checkpoint-{epoch}.pth.tar'
        is_best = metric is not None and self._better(metric, self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = metric, epoch
        self.history.append((metric if metric is not None else float('nan'), epoch))
        drop = self._prune()
        # the state saved is the one after this epoch, so a run resumed from it prunes this epoch's file too
        checkpoint['keeper'] = self.state()
        atomic_torch_save(checkpoint, path)
        atomic_duplicate(path, self.output_dir / LAST)
        if is_best:
            atomic_duplicate(path, self.output_dir / BEST)
        for e in drop:
            (self.output_dir / f'checkpoint-{e}.pth.tar').unlink(missing_ok=True)
        return is_best

    def save_last(self, checkpoint: Dict[str, Any]) -> None:
        """Write ``last.pth.tar`` alone (a mid-epoch checkpoint: no epoch file, no best)."""
        checkpoint['keeper'] = self.state()
        atomic_torch_save(checkpoint, self.output_dir / LAST)

    def _prune(self) -> List[int]:
        """Keep the best ``max_history`` entries of the history (nan ranks last); returns the epochs dropped."""
        def key(h):
            m = h[0]
            if m != m:  # nan: worst
                return float('inf')
            return m if self.decreasing else -m
        ranked = sorted(self.history, key=key)
        keep, drop = ranked[:self.max_history], ranked[self.max_history:]
        self.history = sorted(keep, key=lambda h: h[1])
        return [epoch for _, epoch in drop]
