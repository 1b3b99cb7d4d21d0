"""Console logging for the entry points: our own progress at INFO, other libraries' at WARNING.

``logging.basicConfig(level=INFO)`` on the root logger would also print every library's INFO
lines (``datasets`` announcing JAX, ``timm`` loading weights, ...) between ours.
"""
from __future__ import annotations

import logging

OUR_LOGGERS = ('train', 'timm_multilabel')


def setup_logging(verbose: bool = True) -> None:
    """Messages only (no level/time prefix); INFO from ``train.py`` and ``timm_multilabel`` when
    ``verbose`` (False on non-main processes), WARNING from everything else."""
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
