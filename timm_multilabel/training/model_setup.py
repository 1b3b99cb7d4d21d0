"""The model, device and loop flags of timm's train.py, with timm's meanings, on Accelerate.

What each function gives train.py, in the order train.py calls them:

* :func:`check_model_flags`: one-line refusals of values and combinations that cannot mean anything.
* :func:`accelerator_kwargs`: ``Accelerator(...)`` arguments of ``--device``, ``--device-modules``,
  ``--no-ddp-bb``.
* :func:`set_global_model_flags`: ``--fuser`` (timm's ``set_jit_fuser``), ``--fast-norm``.
* :func:`pretrained_kwargs`: ``--pretrained`` / ``--pretrained-path`` (timm's head adaptation).
* :func:`create_train_model`: ``timm.create_model`` with ``--gp``, ``--bn-momentum``, ``--bn-eps``,
  ``--drop-block``, ``--drop-path`` (or the deprecated ``--drop-connect``), ``--torchscript``'s
  scriptable layers and ``in_chans`` from ``--in-chans`` / ``--input-size``.
* :func:`prepare_model_layers`: ``--grad-checkpointing``, ``--split-bn``, the device and
  ``--model-dtype``, ``--channels-last``, ``--sync-bn`` (only under more than one process).
* :func:`distribute_bn_stats` (``--dist-bn`` after each epoch), :func:`should_evaluate`
  (``--val-interval``), :func:`recovery_every` (``--recovery-interval``), :func:`synchronize`
  (``--synchronize-step``), :func:`save_batch_images` (``--save-images``).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import timm
import torch
import torch.nn as nn
import torchvision
from accelerate.utils import DistributedDataParallelKwargs
from timm.layers import convert_splitbn_model, convert_sync_batchnorm, set_fast_norm
from timm.utils import distribute_bn, set_jit_fuser

from ..distill import cast_float_inputs
from ..errors import UserError
from ..fileio import atomic_path
from .sync_bn import make_cpu_syncable

_logger = logging.getLogger(__name__)

FUSERS = ('', 'te', 'old', 'legacy', 'nvfuser', 'nvf')
# create_model keyword -> the flag that sets it (for one-line errors of models that do not take it)
MODEL_KWARG_FLAGS = {'global_pool': '--gp', 'bn_momentum': '--bn-momentum', 'bn_eps': '--bn-eps',
                     'drop_block_rate': '--drop-block', 'drop_path_rate': '--drop-path', 'drop_rate': '--drop',
                     'in_chans': '--in-chans'}


def _get(args, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def check_model_flags(args) -> None:
    """Refuse model/device/loop flag values and combinations that cannot work, in one line (those
    args.py's ``check_args`` does not already refuse)."""
    if _get(args, 'torchscript') and _get(args, 'kd_model_name'):
        raise UserError('--torchscript with --kd-model-name: the distillation task needs the timm model, not a '
                        'scripted one; use --torchcompile')
    if _get(args, 'torchscript') and _get(args, 'model_dtype') not in (None, '', 'float32'):
        raise UserError(f'--torchscript with --model-dtype {args.model_dtype}: the scripted model cannot cast its float32 '
                        f'input images; use --torchcompile')
    if _get(args, 'fuser', '') not in FUSERS:
        raise UserError(f'--fuser {args.fuser}: expected one of te, old, nvfuser (or "" for torch\'s default)')
    drop_connect, drop_path = _get(args, 'drop_connect'), _get(args, 'drop_path')
    if drop_connect is not None and drop_path is not None and drop_connect != drop_path:
        raise UserError(f'--drop-connect {drop_connect} and --drop-path {drop_path}: --drop-connect is the deprecated '
                        f'name of --drop-path; give one')
    if drop_connect is not None and not 0 <= drop_connect <= 1:
        raise UserError(f'--drop-connect {drop_connect}: must be in [0, 1]')
    for name in ('drop_block', 'bn_momentum'):
        value = _get(args, name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f'--{name.replace("_", "-")} {value}: must be in [0, 1]')
    if _get(args, 'bn_eps') is not None and args.bn_eps <= 0:
        raise UserError(f'--bn-eps {args.bn_eps}: must be > 0')
    recovery, every = _get(args, 'recovery_interval') or 0, _get(args, 'checkpoint_every') or 0
    if recovery < 0:
        raise UserError(f'--recovery-interval {recovery}: must be >= 0')
    if recovery and every and recovery != every:
        raise UserError(f'--recovery-interval {recovery} and --checkpoint-every {every}: the same setting (a '
                        f'resumable checkpoint every N updates); give one')
    if _get(args, 'val_interval', 1) < 1:
        raise UserError(f'--val-interval {args.val_interval}: must be >= 1')
    device = _get(args, 'device') or 'cuda'
    if ':' in device:
        raise UserError(f'--device {device}: Accelerate gives each process its device; pick devices with '
                        f'CUDA_VISIBLE_DEVICES (or the backend\'s equivalent) and pass --device {device.split(":")[0]}')


def import_device_modules(modules) -> None:
    """``--device-modules``: import the device backend modules (e.g. ``torch_npu``) before anything else."""
    for name in modules or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f'--device-modules {name}: cannot be imported ({e})') from None


def _accelerator_available() -> bool:
    accel = getattr(torch, 'accelerator', None)
    return accel.is_available() if accel is not None else torch.cuda.is_available()


def accelerator_kwargs(args) -> Dict[str, Any]:
    """``Accelerator(...)`` arguments of ``--device`` (``cuda``, timm's default: the accelerator if
    there is one, else the CPU; ``cpu``: the CPU; another backend, e.g. ``xpu``: refused when it is
    not available), ``--device-modules`` (imported first) and ``--no-ddp-bb`` (DDP without
    broadcasting buffers). Returns ``cpu`` and ``kwargs_handlers``."""
    import_device_modules(_get(args, 'device_modules'))
    kind = (_get(args, 'device') or 'cuda').split(':')[0]
    if kind == 'cpu':
        cpu = True
    elif kind == 'cuda':
        cpu = not _accelerator_available()
    else:
        backend = getattr(torch, kind, None)
        if backend is None or not hasattr(backend, 'is_available') or not backend.is_available():
            raise UserError(f'--device {kind}: not available on this machine (a backend module to import first '
                            f'goes in --device-modules)')
        cpu = False
    handlers = [DistributedDataParallelKwargs(broadcast_buffers=False)] if _get(args, 'no_ddp_bb') else []
    return dict(cpu=cpu, kwargs_handlers=handlers)


def set_global_model_flags(args) -> None:
    """``--fuser`` (timm's ``set_jit_fuser``) and ``--fast-norm`` (timm's ``set_fast_norm``): process-wide
    settings that must be made before the model is created."""
    if _get(args, 'fuser'):
        try:
            set_jit_fuser(args.fuser)
        except (RuntimeError, AttributeError, AssertionError) as e:
            raise UserError(f'--fuser {args.fuser}: not available with this torch ({e})') from None
    if _get(args, 'fast_norm'):
        set_fast_norm()


def in_chans_of(args) -> int:
    """timm's rule: ``--in-chans``, else the first of ``--input-size C H W``, else 3."""
    if _get(args, 'in_chans') is not None:
        return args.in_chans
    if _get(args, 'input_size') is not None:
        return args.input_size[0]
    return 3


def model_kwargs_from_args(args) -> Dict[str, Any]:
    """The ``create_model`` keyword arguments timm's train.py derives from the flags (None values are
    dropped by ``create_model``); ``--model-kwargs`` come last and win."""
    drop_path = _get(args, 'drop_path')
    if drop_path is None and _get(args, 'drop_connect') is not None:
        _logger.warning('--drop-connect is deprecated (timm): use --drop-path; taken as --drop-path '
                        f'{args.drop_connect}')
        drop_path = args.drop_connect
    kwargs: Dict[str, Any] = dict(
        in_chans=in_chans_of(args), drop_rate=_get(args, 'drop', 0.0), drop_path_rate=drop_path,
        drop_block_rate=_get(args, 'drop_block'), global_pool=_get(args, 'gp'),
        bn_momentum=_get(args, 'bn_momentum'), bn_eps=_get(args, 'bn_eps'))
    kwargs.update(_get(args, 'model_kwargs') or {})
    return kwargs


def pretrained_kwargs(args) -> Dict[str, Any]:
    """The ``create_model`` weight arguments of ``--pretrained`` and ``--pretrained-path FILE``.

    ``FILE`` is loaded as timm's train.py loads it: as the model's pretrained weights
    (``pretrained_cfg_overlay=dict(file=FILE, num_classes=-1)``), so timm's ``load_pretrained``
    always drops the file's classifier and keeps the new head's initialization (any class count),
    adapts the first convolution to ``--in-chans``, and loads the rest. Unlike timm's train.py,
    which ignores the file without ``--pretrained``, ``--pretrained-path`` alone loads it. A missing
    file is refused in one line."""
    path = _get(args, 'pretrained_path')
    if not path:
        return dict(pretrained=bool(_get(args, 'pretrained')))
    if not Path(path).is_file():
        raise UserError(f'--pretrained-path {path}: no such file')
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=-1))


def create_train_model(args, num_classes: int, **extra: Any) -> nn.Module:
    """``timm.create_model(args.model, ...)`` with the flags' keyword arguments (see
    :func:`model_kwargs_from_args`) and ``scriptable=--torchscript``; ``extra`` (e.g. ``pretrained``,
    ``pretrained_cfg_overlay``) is passed on. A model that does not take a flag's argument is refused
    in one line naming the flag (timm's train.py fails with a TypeError)."""
    kwargs = {**model_kwargs_from_args(args), **extra}
    try:
        return timm.create_model(args.model, num_classes=num_classes, scriptable=bool(_get(args, 'torchscript')),
                                 **kwargs)
    except TypeError as e:
        bad = next((k for k in kwargs if f"unexpected keyword argument '{k}'" in str(e)), None)
        if bad is None:
            raise
        flag = MODEL_KWARG_FLAGS.get(bad, f'--model-kwargs {bad}=')
        raise UserError(f'{flag} {kwargs[bad]}: {args.model} does not take {bad} (in timm only some model families '
                        f'do, e.g. EfficientNet/MobileNet for --bn-momentum/--bn-eps, ResNet for --drop-block)') \
            from None
    except RuntimeError as e:  # timm's load_pretrained: a file of another model, or one torch will not load
        file = (kwargs.get('pretrained_cfg_overlay') or {}).get('file')
        if file is None:
            raise
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].endswith(':') else (lines or [type(e).__name__])[0]
        raise UserError(f'--pretrained-path {file}: cannot load it into {args.model} ({detail[:200]})') from None


def enable_grad_checkpointing(model: nn.Module, name: str) -> None:
    """``--grad-checkpointing``: timm's ``set_grad_checkpointing(True)``; refused for models without it."""
    try:
        model.set_grad_checkpointing(enable=True)
    except (AttributeError, AssertionError, NotImplementedError) as e:
        raise UserError(f'--grad-checkpointing: {name} does not support gradient checkpointing ({e})') from None


def prepare_model_layers(model: nn.Module, args, device: torch.device, num_processes: int) -> nn.Module:
    """Model changes timm's train.py makes before distributed wrapping, in timm's order:
    ``--grad-checkpointing``, ``--split-bn`` (one BatchNorm per augmentation split), the device and
    ``--model-dtype``, ``--channels-last``, then ``--sync-bn`` when there is more than one process
    (CPU processes get :mod:`.sync_bn`'s CPU-capable layers). Returns the (possibly new) model."""
    if _get(args, 'grad_checkpointing'):
        enable_grad_checkpointing(model, args.model)
    if _get(args, 'split_bn'):
        model = convert_splitbn_model(model, max(_get(args, 'aug_splits') or 0, 2))
    dtype = getattr(torch, args.model_dtype) if _get(args, 'model_dtype') else None
    model.to(device=device, dtype=dtype)
    if dtype is not None and dtype != torch.float32:
        cast_float_inputs(model, dtype)  # timm's loaders hand it images of that dtype; ours float32
    if _get(args, 'channels_last'):
        model.to(memory_format=torch.channels_last)
    if _get(args, 'sync_bn'):
        if num_processes > 1:
            # torch's SyncBatchNorm runs on GPUs only: CPU processes get sync_bn.py's layers
            model = make_cpu_syncable(model) if device.type == 'cpu' else convert_sync_batchnorm(model)
        else:
            _logger.info('--sync-bn: one process, so BatchNorm is left as it is (as timm does)')
    return model


def distribute_bn_stats(model: nn.Module, mode: str, num_processes: int) -> bool:
    """``--dist-bn``: after an epoch, average (``reduce``) or copy rank 0's (``broadcast``) BatchNorm
    running statistics on every process (timm's ``distribute_bn``). True when it did."""
    if num_processes < 2 or mode not in ('broadcast', 'reduce'):
        return False
    distribute_bn(model, num_processes, reduce=mode == 'reduce')
    return True


def should_evaluate(epoch: int, num_epochs: int, val_interval: int) -> bool:
    """``--val-interval``: evaluate and checkpoint after 0-based ``epoch`` when ``epoch + 1`` is a
    multiple of the interval, and after the last epoch (timm)."""
    return (epoch + 1) % max(val_interval, 1) == 0 or epoch + 1 == num_epochs


def recovery_every(args) -> int:
    """Updates between resumable mid-epoch checkpoints: ``--checkpoint-every`` or its timm name
    ``--recovery-interval`` (0: at epoch ends only)."""
    return _get(args, 'checkpoint_every') or _get(args, 'recovery_interval') or 0


def synchronize(device: torch.device) -> None:
    """``--synchronize-step``: wait for the device's queued work (no-op on the CPU)."""
    backend = getattr(torch, device.type, None)
    if device.type != 'cpu' and backend is not None and hasattr(backend, 'synchronize'):
        backend.synchronize()


def save_batch_images(images: torch.Tensor, path: Path) -> None:
    """``--save-images``: the input batch ``images`` [B, C, H, W] as one JPEG grid at ``path``, each
    image min-max normalized (timm: ``torchvision.utils.save_image(..., padding=0, normalize=True)``)."""
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(images.detach().float().cpu(), tmp, format='JPEG', padding=0, normalize=True)
