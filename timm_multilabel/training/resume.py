"""Where a run stands, and the checkpoints that let it continue exactly from there.

:class:`TrainState` is the loop's position (the epoch being trained, optimizer updates so far,
the per-epoch log, progress inside an unfinished epoch). :class:`RunCheckpoints` writes it
with everything else an exact resume needs, at epoch ends and every ``--checkpoint-every``
updates; :func:`resume_run` reads it back into the task, optimizer, scheduler and checkpoint
keeper and returns the :class:`TrainState` to continue from.

A checkpoint holds timm's keys (``epoch`` = the last *finished* epoch, ``arch``, ``state_dict``,
``optimizer``, ``state_dict_ema``, ``metric``, ``version``) plus ``scheduler``, ``task_state``,
``num_updates``, ``history``, ``keeper``, ``rng`` (one state per rank), ``label_names`` (the
training data's class names, when it has them: what ``export`` names the classes with before the run's
``config.json`` exists) and, mid-epoch, ``epoch_progress`` (the unfinished epoch, batches done,
running loss and seconds).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from accelerate import Accelerator

from ..checkpoint_files import RESUME_PREFER, load_checkpoint_file, resolve_checkpoint_path
from ..errors import UserError
from .checkpoint import CheckpointKeeper, rng_state, set_rng_state

_logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The loop's position: ``epoch`` being trained, ``num_updates`` so far, one ``history`` row
    per finished epoch, and ``epoch_progress`` inside an unfinished epoch (None at its start)."""

    epoch: int = 0
    num_updates: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    epoch_progress: Optional[Dict[str, Any]] = None

    def total(self, key: str) -> float:
        """Sum of ``key`` over the finished epochs (e.g. ``epoch_seconds``)."""
        return sum(row.get(key, 0.0) for row in self.history)


class RunCheckpoints:
    """Writes train.py's checkpoints through a :class:`CheckpointKeeper`.

    Both save methods are collective (every rank calls them: the RNG states of all ranks are
    gathered); only the main process writes. ``label_names`` (one per class, or None) go into every
    checkpoint as a list of str (``torch.load(weights_only=True)`` reads it).
    """

    def __init__(self, accelerator: Accelerator, keeper: CheckpointKeeper, task: Any, optimizer: Any,
                 scheduler: Any, args: Any, label_names: Optional[Sequence[str]] = None):
        self.accelerator = accelerator
        self.keeper = keeper
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.args = args
        self.label_names = [str(n) for n in label_names] if label_names else None

    def _checkpoint(self, state: TrainState, finished_epoch: int, metric: Optional[float]) -> Dict[str, Any]:
        acc = self.accelerator
        rngs = acc.gather_for_metrics([rng_state()], use_gather_object=True) if acc.num_processes > 1 \
            else [rng_state()]
        if not acc.is_main_process:
            return {}
        ckpt = {
            'epoch': finished_epoch, 'arch': self.args.model, 'version': 2, 'num_updates': state.num_updates,
            'args': vars(self.args), 'metric': metric, 'history': state.history, 'rng': rngs,
            'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
            **self.task.get_checkpoint_state(),
        }
        if self.label_names is not None:
            ckpt['label_names'] = self.label_names
        if self.task.has_ema():
            ckpt.update(self.task.get_checkpoint_state(ema=True))
        return ckpt

    def save_epoch(self, state: TrainState, metric: Optional[float]) -> None:
        """``checkpoint-<epoch>.pth.tar``, ``last`` and (when best by ``metric``) ``model_best``."""
        ckpt = self._checkpoint(state, state.epoch, metric)
        if self.accelerator.is_main_process:
            self.keeper.save(ckpt, state.epoch, metric)

    def save_mid_epoch(self, state: TrainState, progress: Dict[str, Any]) -> None:
        """``last.pth.tar`` inside ``state.epoch``; ``epoch`` stays the last finished one (timm's
        meaning) and ``epoch_progress`` records the unfinished one."""
        ckpt = self._checkpoint(state, state.epoch - 1, None)
        if self.accelerator.is_main_process:
            ckpt['epoch_progress'] = {'epoch': state.epoch, **progress}
            self.keeper.save_last(ckpt)


def resume_run(
        resume: str,
        task: Any,
        optimizer: Any,
        scheduler: Any,
        keeper: CheckpointKeeper,
        process_index: int,
        batches_per_epoch: int,
        updates_per_epoch: int,
        restore_optimizer: bool = True,
) -> TrainState:
    """Load ``resume`` (a checkpoint file or a run folder) into the task (weights, EMA, task
    state), optimizer and scheduler (unless ``restore_optimizer`` is False), the keeper and this
    process's RNGs; return the state to continue from. A checkpoint that does not fit is refused
    in one line."""
    path = resolve_checkpoint_path(resume, RESUME_PREFER, flag='--resume')
    ckpt = load_checkpoint_file(path)
    try:
        task.load_checkpoint_state(ckpt['state_dict'], ckpt.get('task_state'))
        if task.has_ema():
            # the task's own API, as timm's load_task_ema_checkpoint: feature distillation's EMA is a
            # wrapper (student + projection) whose state_dict_ema holds the student, task_state_ema the rest;
            # a checkpoint of a run without --model-ema starts the EMA from its weights (timm too)
            ema = 'state_dict_ema' in ckpt
            task.load_checkpoint_state(ckpt['state_dict_ema' if ema else 'state_dict'],
                                       ckpt.get('task_state_ema' if ema else 'task_state'), ema=True)
        if restore_optimizer:
            optimizer.load_state_dict(ckpt['optimizer'])
            scheduler.load_state_dict(ckpt['scheduler'])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f'checkpoint {path}: does not fit this run ({str(e).splitlines()[0][:200]})')
    epoch = ckpt['epoch'] + 1
    progress = ckpt.get('epoch_progress')
    if progress is not None and progress['batches'] >= batches_per_epoch:
        raise UserError(f'--resume: the checkpoint is {progress["batches"]} batches into epoch {progress["epoch"]}, '
                        f'which has only {batches_per_epoch} batches with these flags (did --batch-size or the data '
                        f'change?)')
    rngs = ckpt.get('rng')
    rank_rng = rngs[min(process_index, len(rngs) - 1)] if rngs else None
    if rank_rng is not None:
        set_rng_state(rank_rng)
        if progress is not None:
            # the loop sets it again after the skipping loader's first fetch (see train_one_epoch)
            progress = {**progress, 'rng': rank_rng}
    keeper.load_state(ckpt.get('keeper'))
    _logger.info(f'resumed from {path} at epoch {epoch}' + (f', batch {progress["batches"]}' if progress else ''))
    return TrainState(epoch=epoch, num_updates=ckpt.get('num_updates', epoch * updates_per_epoch),
                      history=list(ckpt.get('history', [])), epoch_progress=progress)
