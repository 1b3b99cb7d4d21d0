"""Knowledge distillation (timm's ``--kd-*`` flags) as loop tasks.

timm's :class:`~timm.task.LogitDistillationTask`, :class:`~timm.task.FeatureDistillationTask` and
:class:`~timm.task.TokenDistillationTask` with :class:`~timm_multilabel.task.LoopTask`'s hooks,
registered as ``logit_distillation``, ``feature_distillation`` and ``token_distillation``
(train.py selects one with ``--kd-model-name`` and ``--kd-distill-type``). Their
:meth:`~LoopTask.log_state` is the last batch's ``task_loss`` and ``kd_loss`` (``distill_loss``
for token distillation).

The teacher (:func:`load_teacher`), as ``--kd-model-name`` names it:

* a timm model name (``resnet50``): created with its pretrained weights, which timm fetches from
  the Hub (as timm's train.py does; needs the network or the Hugging Face cache);
* ``hf-hub:ORG/NAME``: a Hub model folder (the Hugging Face cache serves it offline);
* ``local-dir:PATH`` or a plain folder ``PATH``: a timm model folder on disk (``config.json`` and
  ``model.safetensors``, as train.py's ``--output`` folder or ``timm.models.save_for_hf`` write
  them); nothing is downloaded.

Its classifier must have the student's number of classes: a teacher whose weights have another
number would distill from a freshly initialized head, so it is refused.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from timm.task import DistillationTeacher, FeatureDistillationTask, LogitDistillationTask, TokenDistillationTask
from timm.utils.model import unwrap_model

from .errors import UserError
from .registry import register_task
from .task import LoopTask

__all__ = [
    'LogitDistillation', 'FeatureDistillation', 'TokenDistillation', 'load_teacher', 'teacher_source',
    'cast_float_inputs', 'DISTILL_TASKS',
]

# --kd-distill-type -> registered task name
DISTILL_TASKS = {'logit': 'logit_distillation', 'feature': 'feature_distillation', 'token': 'token_distillation'}


class _LoopDistillation(LoopTask):
    """Keeps the last batch's loss parts for :meth:`log_state`."""

    _loss_keys = ('task_loss', 'kd_loss', 'distill_loss')

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = super().forward(input, target)
        self._last_losses = {k: out[k].detach() for k in self._loss_keys if k in out}
        return out

    def log_state(self) -> Dict[str, Any]:
        return {k: float(v) for k, v in getattr(self, '_last_losses', {}).items()}


class LogitDistillation(_LoopDistillation, LogitDistillationTask):
    """timm's logit distillation (KL at temperature T, times T^2) with the loop's hooks."""

    name = 'logit_distillation'


class FeatureDistillation(_LoopDistillation, FeatureDistillationTask):
    """timm's feature distillation (MSE of pooled pre-logits, with a learned projection when the
    widths differ: it is part of the trainable module) with the loop's hooks."""

    name = 'feature_distillation'


class TokenDistillation(_LoopDistillation, TokenDistillationTask):
    """timm's token distillation (a student with a distillation head, e.g. DeiT distilled)."""

    name = 'token_distillation'


def cast_float_inputs(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating-point inputs of ``module`` to ``dtype`` on the way in (a forward pre-hook):
    a model in ``--model-dtype`` bfloat16 fed float32 images."""
    def _cast(_module, inputs):
        return tuple(x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs)
    module.register_forward_pre_hook(_cast)


def teacher_source(name: str) -> str:
    """The timm model id of ``--kd-model-name``: an existing folder becomes ``local-dir:FOLDER``."""
    if ':' not in name and os.path.isdir(name):
        return f'local-dir:{name}'
    return name


def _folder_classes(folder: str, where: str) -> Optional[int]:
    config = os.path.join(folder, 'config.json')
    if not os.path.isfile(config):
        raise UserError(f'{where}: {folder} is not a timm model folder (no config.json)')
    try:
        with open(config, encoding='utf-8') as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{where}: cannot read {config} ({e})') from None
    return cfg.get('num_classes', cfg.get('pretrained_cfg', {}).get('num_classes'))


def load_teacher(
        teacher: Union[str, nn.Module, DistillationTeacher],
        student: nn.Module,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        where: str = '--kd-model-name',
) -> DistillationTeacher:
    """The frozen teacher (eval mode, no gradients) for ``student`` (its ``num_classes`` and
    ``in_chans``), from a name or folder (see the module docstring) or a module. Unloadable teachers
    and class-count mismatches are refused in one line starting with ``where``."""
    num_classes = unwrap_model(student).num_classes
    if isinstance(teacher, str):
        source = teacher_source(teacher)
        if source.startswith('local-dir:'):
            folder = source[len('local-dir:'):]
            if not os.path.isdir(folder):
                raise UserError(f'{where} {teacher}: no such folder')
            classes = _folder_classes(folder, f'{where} {teacher}')
            if classes is not None and classes != num_classes:
                raise UserError(f'{where} {teacher}: the teacher has {classes} classes, the student {num_classes}')
        try:
            result = DistillationTeacher(source, num_classes=num_classes, in_chans=unwrap_model(student).in_chans,
                                         device=device, dtype=dtype)
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [''])[0][:200]
            raise UserError(f'{where} {teacher}: cannot create the teacher with its pretrained weights '
                            f'({type(e).__name__}: {first}); without the network pass a local timm model folder '
                            f'(local-dir:PATH or PATH, e.g. a train.py --output folder)') from None
        classes = result.model.pretrained_cfg.get('num_classes')
        if classes is not None and classes != num_classes:
            raise UserError(f'{where} {teacher}: its weights have {classes} classes, the student {num_classes} (its '
                            f'classifier would be untrained)')
    elif isinstance(teacher, DistillationTeacher):
        result = teacher
    else:
        result = DistillationTeacher(teacher.to(device=device, dtype=dtype), device=device, dtype=dtype)
    result.requires_grad_(False)
    if dtype is not None and dtype != torch.float32:
        cast_float_inputs(result.model, dtype)
    return result.eval()


def _common(model, teacher, criterion, device, dtype) -> Dict[str, Any]:
    return dict(student_model=model, teacher_model=load_teacher(teacher, model, device=device, dtype=dtype),
                criterion=criterion, device=device, dtype=dtype, verbose=False)


@register_task('logit_distillation')
def create_logit_distillation_task(
        model: nn.Module,
        teacher: Union[str, nn.Module],
        criterion: Optional[nn.Module] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        loss_type: str = 'kl',
        distill_loss_weight: Optional[float] = None,
        task_loss_weight: Optional[float] = None,
        temperature: float = 1.0,
        **kwargs: Any,
) -> LogitDistillation:
    """Registry factory (``--kd-distill-type logit``). ``kwargs`` takes the loop's common task
    arguments (``num_classes``, ``autocast``), unused here."""
    return LogitDistillation(**_common(model, teacher, criterion, device, dtype), loss_type=loss_type,
                             distill_loss_weight=distill_loss_weight, task_loss_weight=task_loss_weight,
                             temperature=temperature)


@register_task('feature_distillation')
def create_feature_distillation_task(
        model: nn.Module,
        teacher: Union[str, nn.Module],
        criterion: Optional[nn.Module] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        distill_loss_weight: Optional[float] = None,
        task_loss_weight: Optional[float] = None,
        student_feature_dim: Optional[int] = None,
        teacher_feature_dim: Optional[int] = None,
        **kwargs: Any,
) -> FeatureDistillation:
    """Registry factory (``--kd-distill-type feature``)."""
    return FeatureDistillation(**_common(model, teacher, criterion, device, dtype),
                               distill_loss_weight=distill_loss_weight, task_loss_weight=task_loss_weight,
                               student_feature_dim=student_feature_dim, teacher_feature_dim=teacher_feature_dim)


@register_task('token_distillation')
def create_token_distillation_task(
        model: nn.Module,
        teacher: Union[str, nn.Module],
        criterion: Optional[nn.Module] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        distill_type: str = 'soft',
        distill_loss_weight: Optional[float] = None,
        task_loss_weight: Optional[float] = None,
        temperature: float = 1.0,
        **kwargs: Any,
) -> TokenDistillation:
    """Registry factory (``--kd-distill-type token``); the student needs a distillation head."""
    if not hasattr(unwrap_model(model), 'set_distilled_training'):
        raise UserError(f'--kd-distill-type token: {type(unwrap_model(model)).__name__} has no distillation head '
                        f'(use a DeiT distilled model, or --kd-distill-type logit)')
    return TokenDistillation(**_common(model, teacher, criterion, device, dtype), distill_type=distill_type,
                             distill_loss_weight=distill_loss_weight, task_loss_weight=task_loss_weight,
                             temperature=temperature)


def distill_task(args) -> Optional[str]:
    """The registered task of ``--kd-model-name`` / ``--kd-distill-type`` (None without distillation)."""
    if not getattr(args, 'kd_model_name', None):
        return None
    return DISTILL_TASKS[args.kd_distill_type]


def distill_task_kwargs(args) -> Dict[str, Any]:
    """Task factory arguments of the ``--kd-*`` flags for :func:`distill_task`'s task."""
    dtype = getattr(torch, args.model_dtype) if getattr(args, 'model_dtype', None) else None  # the teacher's too
    common = dict(teacher=args.kd_model_name, distill_loss_weight=args.distill_loss_weight,
                  task_loss_weight=args.task_loss_weight, dtype=dtype)
    if args.kd_distill_type == 'logit':
        return dict(common, loss_type=args.kd_loss_type, temperature=args.kd_temperature)
    if args.kd_distill_type == 'feature':
        return dict(common, student_feature_dim=args.kd_student_feature_dim,
                    teacher_feature_dim=args.kd_teacher_feature_dim)
    return dict(common, distill_type=args.kd_token_distill_type, temperature=args.kd_temperature)


# timm's defaults of the --kd-* flags that only mean something with --kd-model-name
KD_DEFAULTS = {'kd_distill_type': 'logit', 'kd_loss_type': 'kl', 'distill_loss_weight': None,
               'task_loss_weight': None, 'kd_temperature': 4.0, 'kd_student_feature_dim': None,
               'kd_teacher_feature_dim': None, 'kd_token_distill_type': 'soft'}
# which --kd-* flags each --kd-distill-type reads (besides the two loss weights)
_KD_USES = {'logit': ('kd_loss_type', 'kd_temperature'),
            'feature': ('kd_student_feature_dim', 'kd_teacher_feature_dim'),
            'token': ('kd_token_distill_type', 'kd_temperature')}


def check_distill_args(args) -> None:
    """Refuse ``--kd-*`` flags that would be ignored, and bad values, in one line."""
    def flag(name: str) -> str:
        return '--' + name.replace('_', '-')

    given = {k: getattr(args, k) for k, v in KD_DEFAULTS.items() if hasattr(args, k) and getattr(args, k) != v}
    kd = getattr(args, 'kd_model_name', None)
    if not kd:
        if given:
            name = sorted(given)[0]
            raise UserError(f'{flag(name)} {given[name]} applies to knowledge distillation; add --kd-model-name TEACHER')
        return
    kind = getattr(args, 'kd_distill_type', 'logit')
    if kind not in _KD_USES:
        raise UserError(f'--kd-distill-type {kind}: expected logit, feature or token')
    unused = sorted(k for k in given if k not in (*_KD_USES[kind], 'kd_distill_type', 'distill_loss_weight',
                                                  'task_loss_weight'))
    if unused:
        raise UserError(f'{flag(unused[0])} {given[unused[0]]} does not apply to --kd-distill-type {kind}')
    if getattr(args, 'kd_loss_type', 'kl') != 'kl':
        raise UserError(f'--kd-loss-type {args.kd_loss_type}: only kl is supported (timm)')
    if getattr(args, 'kd_token_distill_type', 'soft') not in ('soft', 'hard'):
        raise UserError(f'--kd-token-distill-type {args.kd_token_distill_type}: expected soft or hard')
    if getattr(args, 'kd_temperature', 4.0) <= 0:
        raise UserError(f'--kd-temperature {args.kd_temperature}: must be > 0')
    if getattr(args, 'task', None) is not None:
        raise UserError(f'--kd-model-name selects the {DISTILL_TASKS[kind]} task; --task {args.task} does not apply')
    if getattr(args, 'naflex_loader', False):  # timm's tasks call .detach() / normalize on the input: any teacher
        raise UserError('--kd-model-name cannot be combined with --naflex-loader: timm\'s distillation tasks give the '
                        'teacher the image batch [B, C, H, W], and NaFlex batches are patch-sequence dicts (timm '
                        'fails on them with any teacher, NaFlex or not); use fixed-size images or --train-img-sizes')
