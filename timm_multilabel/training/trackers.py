"""Experiment trackers through Accelerate's, and what train.py can tell about how it was launched.

* timm's ``--log-wandb`` (with ``--wandb-project``, ``--wandb-tags``, ``--wandb-resume-id``) adds the
  ``wandb`` tracker; ``--log-with NAME [NAME ...]`` adds Accelerate trackers by name (``tensorboard``,
  ``wandb``, ``mlflow``, ``comet_ml``, ``aim``, ``clearml``, ``dvclive``, ...). An unknown name, or a
  tracker whose package is not installed, is refused in one line before any work (timm's train.py
  warns and trains without wandb; a run asked to log should not end without its log).
* The trackers start once the run folder is held (:func:`start_trackers`: the project is
  ``--wandb-project``, else ``timm-multilabel``; the config is the run's arguments), log one row
  per epoch (:func:`log_epoch`, ``step`` = the epoch, the values of ``summary.csv``), and end with
  ``accelerator.end_training()``. Local trackers write under the run folder: TensorBoard's event
  files are in ``<output>/<project>/``.
* :func:`single_process_warning`: ``accelerate launch --num_processes 2`` without ``--multi_gpu``
  starts one process (Accelerate 1.x, also on CPU); train.py says so in one line.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import UserError

__all__ = ['DEFAULT_PROJECT', 'tracker_names', 'check_tracker_args', 'accelerator_kwargs', 'start_trackers',
           'tracker_config', 'epoch_values', 'log_epoch', 'single_process_warning']

DEFAULT_PROJECT = 'timm-multilabel'
_PIP_NAMES = {'comet_ml': 'comet-ml'}


def _known_trackers() -> Dict[str, bool]:
    """Accelerate's tracker names -> whether the tracker's package is installed."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    available = {getattr(t, 'value', str(t)) for t in get_available_trackers()}
    return {str(name): str(name) in available for name in LOGGER_TYPE_TO_CLASS}


def tracker_names(args: Any) -> List[str]:
    """The trackers a run logs to: ``--log-with`` names, plus ``wandb`` for ``--log-wandb``; each once."""
    names = list(getattr(args, 'log_with', None) or [])
    if getattr(args, 'log_wandb', False):
        names.append('wandb')
    return list(dict.fromkeys(str(n).lower() for n in names))


def check_tracker_args(args: Any) -> None:
    """Refuse in one line an unknown tracker name, a tracker whose package is missing, and wandb
    options without wandb."""
    names = tracker_names(args)
    if not names and not any(getattr(args, k, None) for k in ('wandb_project', 'wandb_tags', 'wandb_resume_id')):
        return
    known = _known_trackers()
    for name in names:
        flag = '--log-wandb' if name == 'wandb' and name not in (getattr(args, 'log_with', None) or []) \
            else f'--log-with {name}'
        if name not in known:
            raise UserError(f'{flag}: not an Accelerate tracker; expected one of {", ".join(sorted(known))}')
        if not known[name]:
            raise UserError(f'{flag}: the {name} package is not installed (pip install {_PIP_NAMES.get(name, name)})')
    for key in ('wandb_project', 'wandb_tags', 'wandb_resume_id'):
        if getattr(args, key, None) and 'wandb' not in names:
            raise UserError(f'--{key.replace("_", "-")} applies with --log-wandb')


def accelerator_kwargs(args: Any, output_dir: Path) -> Dict[str, Any]:
    """``Accelerator(...)`` keywords for the trackers: ``log_with`` and a logging folder in the run
    folder; ``{}`` without trackers."""
    names = tracker_names(args)
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration
    return dict(log_with=names, project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                                    logging_dir=str(output_dir)))


def tracker_config(args: Any) -> Dict[str, Any]:
    """The run's arguments as a tracker config: numbers, strings, booleans and None as they are,
    anything else (lists, dicts) as its text (TensorBoard's hyperparameters take only scalars)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in vars(args).items()}


def start_trackers(accelerator: Any, args: Any, output_dir: Path) -> None:
    """``accelerator.init_trackers``: project ``--wandb-project`` (else :data:`DEFAULT_PROJECT`), the
    run's arguments as config; wandb gets the run name (the run folder's), ``--wandb-tags`` and,
    with ``--wandb-resume-id``, ``id=`` and ``resume='must'`` (timm's). Nothing without trackers."""
    names = tracker_names(args)
    if not names:
        return
    init_kwargs: Dict[str, Dict[str, Any]] = {}
    if 'wandb' in names:
        wandb_kwargs: Dict[str, Any] = dict(name=Path(output_dir).name, tags=list(args.wandb_tags or []) or None)
        if args.wandb_resume_id:
            wandb_kwargs.update(id=args.wandb_resume_id, resume='must')
        init_kwargs['wandb'] = wandb_kwargs
    accelerator.init_trackers(args.wandb_project or DEFAULT_PROJECT, config=tracker_config(args),
                              init_kwargs=init_kwargs)


def epoch_values(row: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of one epoch's row of ``summary.csv`` (``epoch`` is the step; None and NaN left out)."""
    return {k: v for k, v in row.items() if k != 'epoch' and isinstance(v, (int, float)) and not isinstance(v, bool)
            and not (isinstance(v, float) and math.isnan(v))}


def log_epoch(accelerator: Any, row: Dict[str, Any]) -> None:
    """One epoch's row to every tracker, at ``step`` = the epoch (the main process logs)."""
    if accelerator.trackers:
        accelerator.log(epoch_values(row), step=int(row['epoch']))


def single_process_warning(num_processes: int, environ: Optional[Dict[str, str]] = None) -> Optional[str]:
    """A one-line warning when ``accelerate launch`` was asked for several processes but started one:
    Accelerate sets ``MASTER_ADDR``/``MASTER_PORT`` for ``--num_processes N > 1`` but starts N processes
    (``WORLD_SIZE``) only with ``--multi_gpu`` (also on CPU); None otherwise."""
    env = os.environ if environ is None else environ
    launched = 'ACCELERATE_MIXED_PRECISION' in env and 'MASTER_PORT' in env
    if launched and num_processes == 1 and 'WORLD_SIZE' not in env:
        return ('accelerate launch started one process: with --num_processes N > 1 it starts N only with '
                '--multi_gpu (also on CPU): accelerate launch --multi_gpu --num_processes N train.py ...')
    return None
