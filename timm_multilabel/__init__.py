"""timm-multilabel: multi-label supervision recovered from single-labeled data for timm.

MILe (multi-label iterated learning) and ReLabel + LabelPooling, as timm training tasks,
transforms and Hugging Face datasets.
"""
from importlib import import_module
from typing import Any

from .version import __version__
from .errors import UserError
from .registry import (
    register_loss, create_loss, list_losses,
    register_target_transform, create_target_transform, list_target_transforms,
    register_task, create_task, list_tasks,
)

# Public names imported on first use, so `import timm_multilabel` stays light
# (no datasets/pyarrow import unless label maps are used).
_LAZY = {
    'MILeTask': 'timm_multilabel.mile',
    'LabelMapAnnotator': 'timm_multilabel.relabel.annotate',
    'load_label_maps': 'timm_multilabel.relabel.store',
    'verify_label_maps': 'timm_multilabel.relabel.verify',
    'LabelMapStore': 'timm_multilabel.relabel.store',
    'label_pool': 'timm_multilabel.relabel.pooling',
    'LabelPoolingCollate': 'timm_multilabel.relabel.collate',
    'metrics': 'timm_multilabel.metrics',
    'detection': 'timm_multilabel.detection',
}

__all__ = [
    '__version__', 'UserError',
    'register_loss', 'create_loss', 'list_losses',
    'register_target_transform', 'create_target_transform', 'list_target_transforms',
    'register_task', 'create_task', 'list_tasks',
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = import_module(_LAZY[name])
        return module if module.__name__.endswith('.' + name) else getattr(module, name)
    raise AttributeError(f"module 'timm_multilabel' has no attribute '{name}'")
