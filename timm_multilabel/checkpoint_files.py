"""Checkpoint files: find the one a run folder holds, read it without running code, pick its weights.

One reader for every checkpoint we meet: train.py's (``args`` a plain dict), timm train.py's (``args``
an ``argparse.Namespace``), a bare state dict (``.pth``/``.bin``) or a ``.safetensors`` file. Pickles
are read with ``torch.load(weights_only=True)`` only; one that would construct or run anything beyond
tensors, plain data and timm's Namespace is refused, naming what it holds. Every failure is a
one-line :class:`UserError` that names the file.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import safetensors.torch
import torch
from timm.models import clean_state_dict

from .errors import UserError

__all__ = [
    'LAST', 'BEST', 'EXPORT_PREFER', 'RESUME_PREFER', 'resolve_checkpoint_path', 'load_checkpoint_file',
    'is_state_dict', 'pick_state_dict', 'checkpoint_args',
]

LAST = 'last.pth.tar'
BEST = 'model_best.pth.tar'
EXPORT_PREFER = (BEST, LAST)  # export: the best weights of a run
RESUME_PREFER = (LAST,)  # resume: where the run stopped
_EPOCH_CHECKPOINT = re.compile(r'checkpoint-(\d+)\.pth\.tar')
_ALLOWED_GLOBALS = ('argparse.Namespace',)  # timm's train.py stores its args as a Namespace


def _newest_epoch_checkpoint(folder: Path) -> Optional[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH_CHECKPOINT.fullmatch(p.name))]
    return max(found)[1] if found else None


def resolve_checkpoint_path(path: Union[str, os.PathLike], prefer: Sequence[str], flag: str) -> Path:
    """The checkpoint file that ``path`` names.

    Args:
        path: a checkpoint file (returned as is), or a run folder.
        prefer: file names to look for in a folder, in order (export: ``EXPORT_PREFER``, resume:
            ``RESUME_PREFER``); without any of them, the newest ``checkpoint-N.pth.tar`` (highest N).
        flag: how the user gave ``path`` (``'--resume'``, ``'checkpoint'``); starts every error message.

    Raises:
        UserError: (one line) ``path`` does not exist, or the folder holds no checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        for name in prefer:
            if (p / name).is_file():
                return p / name
        newest = _newest_epoch_checkpoint(p)
        if newest is None:
            names = ' or '.join([*prefer, 'checkpoint-N.pth.tar'])
            raise UserError(f'{flag} {path}: the folder holds no checkpoint ({names})')
        return newest
    if not p.exists():
        raise UserError(f'{flag} {path}: no such file or folder')
    return p


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _unsafe_globals(path: Path) -> Optional[List[str]]:
    """The globals of ``path`` that ``weights_only`` loading refuses (None when it cannot be scanned)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - unreadable: the load itself reports the error
        return None


def load_checkpoint_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint (``.pth``, ``.pth.tar``, ``.bin`` or ``.safetensors``) into a dict, on the CPU.

    Pickles go through ``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed (timm's
    train.py ``args``); never ``weights_only=False``.

    Raises:
        UserError: (one line, naming the file) missing, unreadable, not a dict, or holding Python
            objects that loading would construct or run (named in the message; nothing is run).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f'checkpoint {path}: no such file')
    if path.suffix == '.safetensors':
        try:
            return safetensors.torch.load_file(str(path), device='cpu')
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise UserError(f'checkpoint {path}: cannot be read as safetensors ({_first_line(e)[:160]})') from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        refused = sorted(set(_unsafe_globals(path) or ()) - set(_ALLOWED_GLOBALS))
        if refused:
            raise UserError(f'checkpoint {path}: refused, it holds Python objects that loading would run '
                            f'or construct ({", ".join(refused[:3])}); only tensors and plain data are read') from None
        raise UserError(f'checkpoint {path}: cannot be loaded ({type(e).__name__}: {_first_line(e)})') from None
    except Exception as e:  # noqa: BLE001 - any failure to read is the file's fault; name it
        raise UserError(f'checkpoint {path}: cannot be loaded ({type(e).__name__}: {_first_line(e)})') from None
    if not isinstance(ckpt, dict):
        raise UserError(f'checkpoint {path}: expected a dict, found {type(ckpt).__name__}')
    return ckpt


def is_state_dict(obj: Mapping[str, Any]) -> bool:
    """True for a non-empty mapping of tensors only (a bare state dict, not a training checkpoint)."""
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def pick_state_dict(ckpt: Mapping[str, Any], path: Union[str, os.PathLike], use_ema: bool = False
                    ) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint, wrapper prefixes (``module.``, ``_orig_mod.``) removed.

    A bare state dict is itself; otherwise ``state_dict`` / ``model`` / ``module`` (``use_ema``:
    ``state_dict_ema`` / ``model_ema``), the first that holds tensors. UserError names ``path``.
    """
    if is_state_dict(ckpt):
        if use_ema:
            raise UserError(f'checkpoint {path}: a bare state dict holds no EMA weights (drop --use-ema)')
        return clean_state_dict(dict(ckpt))
    keys = ('state_dict_ema', 'model_ema') if use_ema else ('state_dict', 'model', 'module')
    for key in keys:
        sd = ckpt.get(key)
        if isinstance(sd, Mapping) and is_state_dict(sd):
            return clean_state_dict(dict(sd))
    what = 'EMA weights (state_dict_ema)' if use_ema else 'weights (state_dict)'
    raise UserError(f'checkpoint {path}: no {what} found; keys are {sorted(ckpt)[:8]}')


def checkpoint_args(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The run arguments a checkpoint records (``args``: a dict or timm's Namespace) as a plain dict; {} if none."""
    args = ckpt.get('args')
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    return dict(args) if isinstance(args, Mapping) else {}
