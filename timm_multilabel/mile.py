"""MILe: multi-label iterated learning as a timm training task.

Algorithm 1 of Rajeswar et al., "Multi-label Iterated Learning for Image Classification with
Label Ambiguity" (CVPR 2022), as a :class:`timm.task.TrainingTask` (through
:class:`timm_multilabel.task.LoopTask`, whose hooks train.py's loop calls):

* **teacher phase** (``kt`` optimizer updates): the model trains with sigmoid BCE on the given
  targets (class indices become one-hot; dense ``[B, C]`` targets from Mixup/CutMix or
  LabelPooling are used as they are);
* **switch**: a frozen copy of the model becomes the teacher;
* **student phase** (``ks`` updates): the model trains with BCE on the teacher's
  pseudo-labels ``sigmoid(teacher(x)) > rho`` for the same augmented batch ``x``; then the
  next teacher phase starts from the student's weights.

Which weights the student starts from (``student=``):

* ``'continue'`` (default, as the authors' code): the student is the same model continuing
  from the teacher's weights; the optimizer state carries on.
* ``'separate'`` (Algorithm 1 read literally): the student is its own network θS that never
  takes the teacher's ``kt`` updates. The teacher phase trains a copy of θS; at the switch the
  model goes back to θS (weights, buffers and, with :meth:`MILeTask.attach_optimizer`, the
  optimizer state as they were when the teacher phase began) and imitates the teacher. Costs
  one more copy of the weights (and of the optimizer state) during teacher phases.

The training loop calls :meth:`MILeTask.step` (the loop protocol's ``after_update``) once after
every optimizer update (with gradient accumulation: once per update, not per micro-batch)::

    task = MILeTask(model, kt=300, ks=100, rho=0.25, autocast=amp_autocast)
    optimizer = create_optimizer_v2(task.get_trainable_module(), ...)
    for x, y in loader:
        with amp_autocast():
            loss = task(x, y)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        task.step()   # advances the MILe schedule; copies the teacher at a phase switch

How the teacher stays out of the way: it lives in a plain Python object
(:class:`_TeacherSlot`), not in a registered submodule, so ``task.parameters()``,
``task.state_dict()``, ``get_trainable_module()``, ``get_eval_model()``, DDP/Accelerate
wrapping and EMA never see it. It is saved only through :meth:`MILeTask.get_task_state`
(checkpoint key ``task_state``, and only while a student phase is running). ``task.to()`` /
``.half()`` move it with the task (see :meth:`MILeTask._apply`).
"""
from __future__ import annotations

import argparse
import copy
import logging
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy
from timm.utils.model import unwrap_model

from .errors import UserError
from .registry import register_task
from .task import LoopTask

_logger = logging.getLogger(__name__)

__all__ = [
    'MILeTask', 'create_mile_task', 'eq1_bce', 'add_mile_arguments', 'mile_kwargs_from_args', 'check_mile_args',
    'DEFAULT_KT', 'DEFAULT_KS', 'DEFAULT_RHO',
]

TEACHER = 'teacher'
STUDENT = 'student'
PHASES = (TEACHER, STUDENT)
STUDENT_MODES = ('continue', 'separate')

# Defaults. The paper (Sec. 3, 4.4, Fig. 3) gives guidance, not one setting: keep kt much
# smaller than the number of updates in an epoch (a teacher that trains long overfits the
# one-hot labels), ks <= kt (a student that imitates long overfits the teacher; large ks hurts
# most), small values of both work best; rho = 0.25 on ImageNet, 0.1 on multi-label digits
# (lower rho -> more labels per image, better ReaL-F1). kt=300 / ks=100 are our defaults for
# ImageNet-scale runs (~5000 updates per epoch); scale them with the epoch length for small
# data sets, and sweep with ``benchmarks/mile_digits.py --sweep``.
DEFAULT_KT = 300
DEFAULT_KS = 100
DEFAULT_RHO = 0.25


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"MILe {name} must be an integer >= 1, got {value!r}")
    return value


def _check_rho(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0. < float(value) < 1.:
        raise UserError(f"MILe rho (pseudo-label threshold) must be in (0, 1), got {value!r}")
    return float(value)


class _TeacherSlot:
    """Holds the frozen teacher outside nn.Module registration (plain object attribute).

    ``model`` is the frozen copy; ``forward`` the callable run on batches (the model, or a
    torch.compile of it when :meth:`MILeTask.compile` was used).
    """

    def __init__(self):
        self.model: Optional[nn.Module] = None
        self.forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


def eq1_bce() -> BinaryCrossEntropy:
    """MILe's loss, Eq. 1 of the paper (and the official code's ``rescale_sigmoid``): binary
    cross-entropy summed over the C classes and averaged over the samples of the batch."""
    return BinaryCrossEntropy(smoothing=0.0, sum_classes=True)


def _per_row_bce(crit: Any) -> Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``(logits [B, C], dense target [B, C]) -> loss per row [B]`` of a BCE criterion (torch's
    mean-reduced one, or timm's mean-reduced or class-summed one), so that averaging it over the
    rows gives the criterion's value; None for other criteria.

    Lets the teacher phase mask unlabeled rows without a host sync. For timm's
    BinaryCrossEntropy on dense targets this reproduces its forward (threshold, dense smoothing).
    """
    if isinstance(crit, nn.BCEWithLogitsLoss) and crit.reduction == 'mean':
        return lambda x, t: F.binary_cross_entropy_with_logits(
            x, t, weight=crit.weight, pos_weight=crit.pos_weight, reduction='none').mean(dim=1)
    if isinstance(crit, BinaryCrossEntropy) and (crit.sum_classes or crit.reduction == 'mean'):
        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if crit.smooth_dense and crit.smoothing:
                t = t * (1. - crit.smoothing) + 0.5 * crit.smoothing
            if crit.target_threshold is not None:
                t = t.gt(crit.target_threshold).to(dtype=t.dtype)
            per_elem = F.binary_cross_entropy_with_logits(
                x, t, weight=crit.weight, pos_weight=crit.pos_weight, reduction='none')
            return per_elem.sum(dim=1) if crit.sum_classes else per_elem.mean(dim=1)
        return fn
    return None


class MILeTask(LoopTask):
    """Multi-label iterated learning (MILe): alternating teacher/student phases on one model.

    Args:
        model: The model to train (``[B, ...] -> logits [B, C]``); may already be wrapped
            (DDP, Accelerate, ``torch.compile``): the teacher is copied from the unwrapped model.
        kt: Optimizer updates per teacher phase (>= 1).
        ks: Optimizer updates per student phase (>= 1); the paper advises ``ks <= kt``.
        rho: Pseudo-label threshold on the teacher's sigmoid probabilities, in (0, 1).
        keep_labels: OR the given label into the student target (the authors'
            ``iterative_groundtruth``); for dense targets the OR is an element-wise max.
        student: ``'continue'`` (the student continues from the teacher's weights) or
            ``'separate'`` (Algorithm 1 literally: the student returns to its own weights at
            each switch); see the module docstring.
        num_classes: Expected number of logits, checked against the model output when given.
        criterion: Loss ``criterion(logits [B, C], dense target [B, C]) -> scalar``; default
            :func:`eq1_bce`, the paper's Eq. 1 (BCE summed over classes, averaged over samples;
            ``nn.BCEWithLogitsLoss()`` averages over classes too, a loss and gradient C times
            smaller, which changes the method under SGD). Targets always reach it dense (index targets are
            one-hot encoded first), so a criterion's index-target smoothing does not apply; the
            student's targets are binary by construction.
        autocast: Context-manager factory of the training autocast (e.g. ``amp_autocast`` or
            ``accelerator.autocast``), used around the teacher's forward; default no autocast.
        device: Device for task tensors/buffers.
        dtype: Dtype for task tensors/buffers.
        verbose: Enable info logging.

    Targets given to :meth:`forward`: class indices ``[B]`` (int; ``-1`` marks an unlabeled
    sample: no loss in the teacher phase, the teacher's pseudo-labels only in the student phase),
    or dense float ``[B, C]`` (every row is labeled; an all-zero row means "no class").
    """

    name = 'mile'

    def __init__(
            self,
            model: nn.Module,
            kt: int,
            ks: int,
            rho: float = DEFAULT_RHO,
            keep_labels: bool = False,
            student: str = 'continue',
            num_classes: Optional[int] = None,
            criterion: Optional[Union[nn.Module, Callable]] = None,
            autocast: Optional[Callable[[], ContextManager]] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        self.kt = _check_count('kt', kt)
        self.ks = _check_count('ks', ks)
        self.rho = _check_rho(rho)
        self.keep_labels = bool(keep_labels)
        if student not in STUDENT_MODES:
            raise UserError(f"MILe student must be one of {', '.join(STUDENT_MODES)}, got {student!r}")
        self.student = student
        if num_classes is not None:
            _check_count('num_classes', num_classes)
        self.num_classes = num_classes
        self.autocast = autocast if autocast is not None else nullcontext

        self.trainable_module = model
        if criterion is None:
            criterion = eq1_bce()
        if isinstance(criterion, nn.Module):
            criterion = criterion.to(device=self.device)
        self.criterion = criterion

        self.phase = TEACHER
        self.updates_in_phase = 0
        self.generation = 0
        self.updates = 0
        self._teacher = _TeacherSlot()
        # teacher pseudo-labels of the current (or last) student phase: positives summed, rows seen
        self._pseudo_positives: Union[torch.Tensor, float] = 0.0
        self._pseudo_rows = 0
        self._compile_args: Optional[Dict[str, Any]] = None
        # student='separate': the student's weights / optimizer state saved when a teacher phase
        # begins (plain attributes, like the teacher: invisible to parameters() and state_dict())
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._student_weights: Optional[Dict[str, torch.Tensor]] = None
        self._student_optimizer: Optional[Dict[str, Any]] = None

        if self.verbose:
            _logger.info(
                f"MILeTask: kt={self.kt}, ks={self.ks}, rho={self.rho}, keep_labels={self.keep_labels}, "
                f"student={self.student}, criterion={type(self.criterion).__name__}")

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """With ``student='separate'``: also give the student back its own optimizer state at each
        switch (momentum / Adam moments of the student's updates, not the teacher's). The
        learning rates stay those the scheduler set."""
        self._optimizer = optimizer

    # ------------------------------------------------------------------ separate student

    @torch.no_grad()
    def _save_student(self) -> None:
        """Keep θS (and its optimizer state) before the teacher phase trains the model."""
        model = unwrap_model(self.trainable_module)
        self._student_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self._optimizer is not None:
            self._student_optimizer = copy.deepcopy(self._optimizer.state_dict()['state'])

    @torch.no_grad()
    def _restore_student(self) -> None:
        """Put θS (and its optimizer state) back into the model after the teacher was copied."""
        if self._student_weights is None:
            raise RuntimeError('MILe: student weights were not saved at the start of the teacher phase')
        unwrap_model(self.trainable_module).load_state_dict(self._student_weights)
        if self._optimizer is not None and self._student_optimizer is not None:
            current = self._optimizer.state_dict()
            self._optimizer.load_state_dict({'state': self._student_optimizer,
                                             'param_groups': current['param_groups']})
        self._student_weights = None
        self._student_optimizer = None

    # ----------------------------------------------------------------------------- teacher

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher (eval mode, ``requires_grad=False``), or None before the first switch."""
        return self._teacher.model

    def _ensure_teacher(self) -> nn.Module:
        """Create the teacher on first use as a frozen deep copy of the unwrapped model."""
        if self._teacher.model is None:
            with torch.no_grad():
                teacher = copy.deepcopy(unwrap_model(self.trainable_module))
            teacher.requires_grad_(False)
            teacher.eval()
            self._teacher.model = teacher
            self._teacher.forward = teacher
            if self._compile_args is not None:
                self._teacher.forward = torch.compile(teacher, **self._compile_args)
        return self._teacher.model

    @torch.no_grad()
    def _copy_teacher(self) -> None:
        """Copy the unwrapped model's current weights into the teacher, reusing its storage."""
        teacher = self._ensure_teacher()
        teacher.load_state_dict(unwrap_model(self.trainable_module).state_dict())
        teacher.eval()
        # DDP keeps parameters equal, but BatchNorm statistics see each rank's local batches:
        # take rank 0's (as DDP's broadcast_buffers does for the model at its next forward).
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            for buf in teacher.buffers():
                torch.distributed.broadcast(buf, src=0)

    def _apply(self, fn, *args, **kwargs):
        """Move/convert the unregistered teacher together with the task (``.to()``, ``.half()``...)."""
        result = super()._apply(fn, *args, **kwargs)
        if self._teacher.model is not None:
            self._teacher.model._apply(fn, *args, **kwargs)
        return result

    # ---------------------------------------------------------------------------- schedule

    def step(self) -> bool:
        """Advance the schedule by one optimizer update; returns True when the phase switched.

        Call once after each ``optimizer.step()`` (not per micro-batch). Finishing the ``kt``-th
        teacher update copies the model into the teacher and starts the student phase;
        finishing the ``ks``-th student update starts the next generation's teacher phase.
        """
        self.updates += 1
        self.updates_in_phase += 1
        if self.phase == TEACHER and self.updates_in_phase >= self.kt:
            self._copy_teacher()
            if self.student == 'separate':
                self._restore_student()
            self.phase = STUDENT
            self.updates_in_phase = 0
            self._pseudo_positives, self._pseudo_rows = 0.0, 0
            _logger.debug(f"MILe: generation {self.generation} student phase at update {self.updates}")
            return True
        if self.phase == STUDENT and self.updates_in_phase >= self.ks:
            self.phase = TEACHER
            self.updates_in_phase = 0
            self.generation += 1
            _logger.debug(f"MILe: generation {self.generation} teacher phase at update {self.updates}")
            return True
        return False

    def after_update(self) -> None:
        """The loop's hook after each optimizer update: :meth:`step`."""
        self.step()

    @property
    def labels_per_image(self) -> Optional[float]:
        """Mean number of classes the teacher marked present per image in the current (or last)
        student phase; None before the first. Near the class count: MILe has collapsed to
        "every class" (ks too long for kt, or rho too low)."""
        if not self._pseudo_rows:
            return None
        return float(self._pseudo_positives) / self._pseudo_rows

    def log_state(self) -> Dict[str, Any]:
        """Generation, phase and the teacher's labels per image, logged each epoch and written to
        summary.json as ``mile``."""
        lpi = self.labels_per_image
        return {'generation': self.generation, 'phase': self.phase,
                'labels_per_image': None if lpi is None else round(lpi, 4)}

    def state_summary(self) -> Dict[str, Any]:
        """The whole schedule state and settings (plain Python values)."""
        return {
            'generation': self.generation,
            'phase': self.phase,
            'updates': self.updates,
            'updates_in_phase': self.updates_in_phase,
            'kt': self.kt,
            'ks': self.ks,
            'rho': self.rho,
            'keep_labels': self.keep_labels,
            'student': self.student,
        }

    # ----------------------------------------------------------------------------- targets

    def _dense_target(self, target: torch.Tensor, output: torch.Tensor):
        """Given targets -> (dense float [B, C], labeled mask [B] bool or None when all labeled)."""
        batch_size, num_classes = output.shape
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f'MILe: model gives {num_classes} logits, task expects num_classes={self.num_classes}')
        if target.shape[0] != batch_size:
            raise ValueError(f'MILe: target batch {target.shape[0]} != input batch {batch_size}')
        if target.ndim == 1 and not target.is_floating_point():
            labeled = target >= 0
            dense = F.one_hot(target.clamp(min=0).long(), num_classes).to(torch.float32)
            dense = dense * labeled.unsqueeze(1)
            return dense, labeled
        if target.ndim == 2 and target.shape[1] == num_classes and target.is_floating_point():
            return target, None
        raise ValueError(
            f'MILe expects class-index targets [B] or dense float targets [B, {num_classes}], '
            f'got {target.dtype} {tuple(target.shape)}')

    @torch.no_grad()
    def pseudo_labels(self, input: torch.Tensor) -> torch.Tensor:
        """The teacher's multi-label targets ``(sigmoid(teacher(input)) > rho)``: float 0/1 ``[B, C]``."""
        if self._teacher.model is None:
            raise RuntimeError('MILe: no teacher yet; pseudo-labels exist only after the first teacher phase')
        with torch.inference_mode(), self.autocast():
            probs = self._teacher.forward(input).float().sigmoid()
            labels = (probs > self.rho).to(torch.float32)
        return labels.clone()  # a normal tensor (inference tensors cannot be saved for backward)

    def _masked_loss(self, output: torch.Tensor, dense: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
        """Loss over labeled rows only; 0 (with a graph) when no row is labeled."""
        crit = self.criterion
        per_row = _per_row_bce(crit)
        if per_row is not None:
            # sync-free: the criterion's per-row loss, averaged over labeled rows
            row_loss = per_row(output, dense)
            mask = labeled.to(row_loss.dtype)
            return (row_loss * mask).sum() / mask.sum().clamp(min=1.)
        idx = labeled.nonzero().squeeze(1)  # a host sync; only for criteria we cannot mask
        if idx.numel() == 0:
            return output.sum() * 0.
        return crit(output[idx], dense[idx])

    # ----------------------------------------------------------------------------- forward

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Forward pass and loss of the current phase.

        Args:
            input: Input batch ``[B, ...]`` (already augmented/mixed).
            target: Class indices ``[B]`` (``-1``: unlabeled) or dense float targets ``[B, C]``.

        Returns:
            Dictionary containing:
                - 'loss': BCE of the current phase
                - 'output': Model logits ``[B, C]``
                - 'target': Dense float ``[B, C]`` target the loss was computed on (teacher
                  phase: unlabeled rows are zero and excluded from the loss)
        """
        if self.phase == STUDENT:
            pseudo = self.pseudo_labels(input)
            self._pseudo_positives = self._pseudo_positives + pseudo.sum(dtype=torch.float64)
            self._pseudo_rows += pseudo.shape[0]
            output = self.trainable_module(input)
            given, labeled = self._dense_target(target, output)
            if self.keep_labels:
                # element-wise max == OR for 0/1 labels; unlabeled rows of `given` are all zero
                pseudo = torch.maximum(pseudo, given.to(pseudo.dtype))
            loss = self.criterion(output, pseudo)
            return {'loss': loss, 'output': output, 'target': pseudo}

        if self.student == 'separate' and self._student_weights is None and torch.is_grad_enabled():
            self._save_student()  # first forward of a teacher phase: before any of its updates
        output = self.trainable_module(input)
        dense, labeled = self._dense_target(target, output)
        if labeled is None:
            loss = self.criterion(output, dense)
        else:
            loss = self._masked_loss(output, dense, labeled)
        return {'loss': loss, 'output': output, 'target': dense}

    # -------------------------------------------------------------- distributed / compile

    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> 'MILeTask':
        """Wrap the model in DistributedDataParallel; the teacher stays unwrapped and local.

        All ranks hold identical teachers: each copies its (DDP-synchronized) model at the switch.
        """
        from torch.nn.parallel import DistributedDataParallel as DDP
        self.trainable_module = DDP(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """Compile the model (train and eval forward) and, once it exists, the teacher's forward."""
        self._compile_args = dict(backend=backend, mode=mode, **compile_kwargs)
        self.trainable_module = torch.compile(self.trainable_module, **self._compile_args)
        self.eval_model = self.trainable_module
        if self._teacher.model is not None:
            self._teacher.forward = torch.compile(self._teacher.model, **self._compile_args)
        return self.trainable_module

    # ----------------------------------------------------------------------- checkpoints

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """Schedule counters, settings and (in a student phase) the teacher's state_dict.

        The teacher tensors share storage with the live teacher, as ``state_dict()`` does:
        serialize (``torch.save``) before training on. EMA checkpoints carry no MILe state.
        """
        if ema:
            return {}
        state: Dict[str, Any] = {
            'mile_version': 1,
            'phase': self.phase,
            'updates_in_phase': self.updates_in_phase,
            'generation': self.generation,
            'updates': self.updates,
            'kt': self.kt,
            'ks': self.ks,
            'rho': self.rho,
            'keep_labels': self.keep_labels,
            'student': self.student,
            'pseudo_positives': float(self._pseudo_positives),
            'pseudo_rows': self._pseudo_rows,
        }
        if self.phase == STUDENT:
            state['teacher'] = self._ensure_teacher().state_dict()
        elif self._student_weights is not None:
            state['student_weights'] = self._student_weights
            if self._student_optimizer is not None:
                state['student_optimizer'] = self._student_optimizer
        return state

    def load_task_state(
            self,
            state: Optional[Dict[str, Any]],
            strict: bool = True,
            module: Optional[nn.Module] = None,
            ema: bool = False,
    ) -> None:
        """Restore the schedule and teacher written by :meth:`get_task_state`.

        With ``strict``, a checkpoint trained with other kt/ks/rho/keep_labels than this task's
        raises :class:`UserError`; without, this task's settings win and the counters carry on.
        A missing state (a plain model checkpoint) leaves the schedule at its start.
        """
        if ema:
            return
        if not state:
            if self.verbose:
                _logger.warning('MILe: checkpoint has no MILe task state; the schedule starts at teacher phase 0')
            return
        if state.get('phase') not in PHASES:
            raise UserError(f"MILe checkpoint task_state has no valid 'phase' (got {state.get('phase')!r})")
        if strict:
            mismatched = [
                f"{k}={state[k]!r} (this run: {getattr(self, k)!r})"
                for k in ('kt', 'ks', 'rho', 'keep_labels', 'student')
                if k in state and state[k] != getattr(self, k)]
            if mismatched:
                raise UserError(f"MILe checkpoint was trained with {', '.join(mismatched)}; "
                                f"use the same --mile-* settings to resume")
        phase = state['phase']
        if phase == STUDENT:
            if 'teacher' not in state:
                raise UserError("MILe checkpoint is in a student phase but has no 'teacher' weights")
            teacher = self._ensure_teacher()
            teacher.load_state_dict(state['teacher'], strict=strict)
            teacher.eval()
        self._student_weights = None
        self._student_optimizer = None
        if phase == TEACHER and self.student == 'separate' and int(state.get('updates_in_phase', 0)) > 0:
            if 'student_weights' not in state:
                raise UserError("MILe checkpoint is inside a teacher phase of --mile-student separate but has "
                                "no 'student_weights'")
            self._student_weights = {k: v.clone() for k, v in state['student_weights'].items()}
            if state.get('student_optimizer') is not None:
                self._student_optimizer = copy.deepcopy(state['student_optimizer'])
        self.phase = phase
        self.updates_in_phase = int(state.get('updates_in_phase', 0))
        self.generation = int(state.get('generation', 0))
        self.updates = int(state.get('updates', 0))
        self._pseudo_positives = float(state.get('pseudo_positives', 0.0))
        self._pseudo_rows = int(state.get('pseudo_rows', 0))


@register_task('mile')
def create_mile_task(
        model: nn.Module,
        kt: int = DEFAULT_KT,
        ks: int = DEFAULT_KS,
        rho: float = DEFAULT_RHO,
        keep_labels: bool = False,
        student: str = 'continue',
        **kwargs,
) -> MILeTask:
    """Registry factory: ``create_task('mile', model=model, kt=..., ks=..., rho=..., **kwargs)``."""
    return MILeTask(model, kt=kt, ks=ks, rho=rho, keep_labels=keep_labels, student=student, **kwargs)


# ----------------------------------------------------------------------------- CLI glue

# flag dest -> default value that does not count as "given" (a parser may default rho to DEFAULT_RHO)
_MILE_FLAG_DEFAULTS = {'mile_kt': DEFAULT_KT, 'mile_ks': DEFAULT_KS, 'mile_rho': DEFAULT_RHO, 'mile_keep_labels': False,
                       'mile_student': 'continue'}


def add_mile_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the ``--mile*`` flags (an argument group) to a training parser."""
    group = parser.add_argument_group(
        'MILe (multi-label iterated learning)',
        'Sigmoid/BCE training where a teacher trained kt updates on the labels hands its '
        'thresholded predictions (sigmoid > rho) to a student for ks updates. Paper guidance: '
        'kt much smaller than an epoch, ks <= kt, low rho (0.25 ImageNet, 0.1 multi-label digits).')
    group.add_argument('--mile', action='store_true', default=False,
                       help='train with MILe (multi-label iterated learning)')
    group.add_argument('--mile-kt', type=int, default=None, metavar='N',
                       help=f'optimizer updates per teacher phase (default: {DEFAULT_KT})')
    group.add_argument('--mile-ks', type=int, default=None, metavar='N',
                       help=f'optimizer updates per student phase, <= kt advised (default: {DEFAULT_KS})')
    group.add_argument('--mile-rho', type=float, default=None, metavar='R',
                       help=f'pseudo-label threshold on teacher sigmoid probabilities (default: {DEFAULT_RHO})')
    group.add_argument('--mile-keep-labels', action='store_true', default=False,
                       help="OR the given label into the student's pseudo-labels")
    group.add_argument('--mile-student', choices=STUDENT_MODES, default=None,
                       help="continue (the authors' code): the student continues from the teacher's "
                            "weights; separate (Algorithm 1 literally): the student keeps its own weights and "
                            "optimizer state, and only imitates the teacher (it collapsed to 'every class' on "
                            "digits-grid at kt=60, rho=0.1; see README) (default: continue)")
    return group


def check_mile_args(args: argparse.Namespace) -> None:
    """Refuse bad ``--mile*`` values and flags that make no sense with MILe (UserError, one line).

    Refused with ``--mile``: kt/ks < 1; rho outside (0, 1); ``--jsd-loss`` (a softmax loss over
    AugMix splits); ``--smoothing`` > 0 (student targets are thresholded binary pseudo-labels;
    smoothing the teacher phase only would make the two phases train on different target
    scales); knowledge distillation (``--kd-model-name``: MILe is its own teacher-student
    scheme); a non-BCE ``--loss``. Without ``--mile``, any ``--mile-*`` flag is refused.
    """
    if not getattr(args, 'mile', False):
        given = [d for d, default in _MILE_FLAG_DEFAULTS.items() if getattr(args, d, None) not in (None, False, default)]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} needs --mile")
        return
    kwargs = mile_kwargs_from_args(args)
    if kwargs['kt'] < 1:
        raise UserError(f"--mile-kt must be >= 1, got {kwargs['kt']}")
    if kwargs['ks'] < 1:
        raise UserError(f"--mile-ks must be >= 1, got {kwargs['ks']}")
    if not 0. < kwargs['rho'] < 1.:
        raise UserError(f"--mile-rho must be in (0, 1), got {kwargs['rho']}")
    if getattr(args, 'jsd_loss', False):
        raise UserError('--mile trains sigmoid BCE on thresholded teacher targets; --jsd-loss '
                        '(softmax Jensen-Shannon over AugMix splits) does not apply')
    smoothing = getattr(args, 'smoothing', 0.) or 0.
    if smoothing > 0:
        raise UserError(f'--mile trains on thresholded teacher targets; label smoothing '
                        f'(--smoothing {smoothing}) does not apply: pass --smoothing 0')
    kd = getattr(args, 'kd_model_name', None)
    if kd:
        raise UserError(f'--mile is its own teacher-student scheme; it cannot be combined with '
                        f'knowledge distillation (--kd-model-name {kd})')
    loss = getattr(args, 'loss', None)
    if loss not in (None, '', 'bce'):
        raise UserError(f"--mile trains with sigmoid BCE; --loss {loss} does not apply")


def mile_kwargs_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """``--mile*`` flags -> ``dict(kt, ks, rho, keep_labels)`` for :func:`create_mile_task`.

    Defaults are filled in; the values are plain Python (JSON-serializable). The criterion is
    the caller's (e.g. ``create_loss('bce', ...)``).
    """
    return dict(
        kt=DEFAULT_KT if getattr(args, 'mile_kt', None) is None else args.mile_kt,
        ks=DEFAULT_KS if getattr(args, 'mile_ks', None) is None else args.mile_ks,
        rho=DEFAULT_RHO if getattr(args, 'mile_rho', None) is None else args.mile_rho,
        keep_labels=bool(getattr(args, 'mile_keep_labels', False)),
        student=getattr(args, 'mile_student', None) or 'continue',
    )
