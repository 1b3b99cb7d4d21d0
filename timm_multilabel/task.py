"""The training tasks' side of train.py's loop: one small protocol, defaults on a shared base.

timm's :class:`timm.task.TrainingTask` already owns the forward pass and loss, the EMA
(``setup_ema`` / ``update_ema``), the parameters to clip (``get_clip_parameters``) and the
task-owned checkpoint state (``get_task_state`` / ``load_task_state``). A loop that also runs
MILe needs three more things from every task, which :class:`LoopTask` adds with do-nothing
defaults so that the loop calls them unconditionally:

* :meth:`LoopTask.attach_optimizer`, once, after the optimizer exists;
* :meth:`LoopTask.after_update`, once after every optimizer update (not per micro-batch);
* :meth:`LoopTask.log_state`, a few plain values for the progress bar, the per-epoch log and
  ``summary.json`` (under the task's :attr:`LoopTask.name`); empty by default.

The loop, in order::

    task = create_task(name, model=model, criterion=criterion, ...)   # a LoopTask
    optimizer = create_optimizer_v2(task.get_trainable_module(), ...)
    if ema: task.setup_ema(decay)
    if compile: task.compile(backend)
    task.use_prepared(accelerator.prepare(task.get_trainable_module()))
    task.attach_optimizer(optimizer)
    for images, target in loader:
        loss = task(images, target)['loss']
        loss.backward(); clip(task.get_clip_parameters()); optimizer.step(); optimizer.zero_grad()
        task.after_update()
        task.update_ema(step=num_updates)
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, Optional

import torch
import torch.nn as nn
from timm.task import ClassificationTask as _TimmClassificationTask
from timm.task import TrainingTask
from timm.utils import ModelEmaV3
from timm.utils.model import unwrap_model

from .registry import register_task

__all__ = ['LoopTask', 'ClassificationTask', 'create_classification_task']


class LoopTask(TrainingTask):
    """A timm ``TrainingTask`` with the hooks train.py's loop calls on every task.

    Subclasses override what they need; the defaults do nothing.
    """

    #: key of :meth:`log_state` in ``summary.json`` and prefix of its per-epoch CSV columns
    name: str = 'task'

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once with the optimizer of the trainable module (before any update)."""

    def after_update(self) -> None:
        """Called once after every optimizer update (with gradient accumulation: per update)."""

    def log_state(self) -> Dict[str, Any]:
        """Plain, JSON-able values worth logging each epoch (``{}``: nothing to log)."""
        return {}

    def use_prepared(self, module: nn.Module) -> None:
        """Train through ``module``: the trainable module as the loop's distributed wrapper returned it
        (Accelerate's ``prepare``, DDP under several processes). The loop's counterpart of timm's
        ``prepare_distributed``, which wraps the module in DDP itself."""
        self.trainable_module = module

    def setup_ema(
            self,
            decay: float = 0.9999,
            use_warmup: bool = False,
            device: Optional[torch.device] = None,
            **kwargs: Any,
    ) -> nn.Module:
        """timm's EMA of the trainable module, copied from the bare model (never a DDP wrapper)."""
        self.trainable_module_ema = ModelEmaV3(
            unwrap_model(self.get_trainable_module()), decay=decay, use_warmup=use_warmup, device=device, **kwargs)
        return self.trainable_module_ema


class ClassificationTask(LoopTask, _TimmClassificationTask):
    """timm's ``ClassificationTask`` (``criterion(model(x), target)``) with the loop's hooks."""

    name = 'classification'


@register_task('classification')
def create_classification_task(
        model: nn.Module,
        criterion: Optional[nn.Module] = None,
        device: Optional[torch.device] = None,
        num_classes: Optional[int] = None,
        autocast: Optional[Callable[[], ContextManager]] = None,
        **kwargs: Any,
) -> ClassificationTask:
    """Registry factory. train.py passes every task factory ``model, criterion, device,
    num_classes, autocast`` (plus ``--task-kwargs``); this one needs only the first three."""
    return ClassificationTask(model, criterion=criterion, device=device, verbose=False, **kwargs)
