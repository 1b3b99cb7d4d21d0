"""The training method of a run, as one small dict: what train.py records in summary.json and the
model card shows, and what an exported checkpoint's card reads back from the checkpoint's args."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Mapping, Optional, Union

from .mile import mile_kwargs_from_args

__all__ = ['describe_method']

# mile_kwargs_from_args key -> the train.py flag (dest) that sets it
_MILE_FLAGS = {'kt': 'mile_kt', 'ks': 'mile_ks', 'rho': 'mile_rho', 'keep_labels': 'mile_keep_labels',
               'student': 'mile_student'}
_RELABEL_SETTINGS = ('fill', 'mode')


def describe_method(args: Optional[Union[Mapping[str, Any], argparse.Namespace]]) -> Dict[str, Any]:
    """The ``method`` dict of a run's arguments (train.py's Namespace, or a checkpoint's args dict).

    ``{'name': 'baseline' | 'mile' | 'relabel' | 'mile+relabel', ...settings}``: with ``--mile`` the
    settings of :func:`~timm_multilabel.mile.mile_kwargs_from_args` (``kt``, ``ks``, ``rho``,
    ``keep_labels``, ``student``, defaults filled in) for the flags the arguments record; with
    ``--relabel-maps`` the ``maps`` and, when recorded, ``fill`` and ``mode``. For train.py's full
    argument set every setting is present.
    """
    if args is None:
        args = {}
    elif isinstance(args, argparse.Namespace):
        args = vars(args)
    method: Dict[str, Any] = {'name': 'baseline'}
    names = []
    if args.get('mile'):
        names.append('mile')
        mile = mile_kwargs_from_args(argparse.Namespace(**args))
        method.update({key: mile[key] for key, flag in _MILE_FLAGS.items() if flag in args})
    if args.get('relabel_maps'):
        names.append('relabel')
        method['maps'] = args['relabel_maps']
        method.update({key: args[f'relabel_{key}'] for key in _RELABEL_SETTINGS
                       if args.get(f'relabel_{key}') is not None})
    if names:
        method['name'] = '+'.join(names)
    return method
