"""Registries for losses, target transforms and training tasks, in timm's style.

timm has a model registry (``register_model`` / ``create_model`` / ``list_models``) but none
for losses or for the transforms that turn a batch's labels into training targets. train.py
resolves its flags through these registries, and third-party packages add their own entries
through the entry-point group ``timm_multilabel.plugins``: each entry point names a module
that registers on import (or a function, called once with no arguments).

    @register_loss('my_bce')
    def my_bce(**kwargs):
        return MyBCE(**kwargs)

    loss = create_loss('my_bce', smoothing=0.1)

In a plugin's ``pyproject.toml``::

    [project.entry-points."timm_multilabel.plugins"]
    my_plugin = "my_package.timm_plugin"
"""
from __future__ import annotations

import fnmatch
import logging
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, List, Optional

from .errors import UserError

_logger = logging.getLogger(__name__)

PLUGIN_GROUP = 'timm_multilabel.plugins'
_plugins_loaded = False


def load_plugins() -> List[str]:
    """Import every ``timm_multilabel.plugins`` entry point once; returns the names loaded.

    A plugin that fails to import is logged and skipped, so one broken package does not
    stop training with the built-in entries.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
            loaded.append(ep.name)
        except Exception as e:  # a plugin must not take down the host
            _logger.warning(f"timm_multilabel plugin '{ep.name}' failed to load: {e}")
    return loaded


class Registry:
    """A name -> factory table; ``kind`` names what it holds in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None, fn: Optional[Callable] = None):
        if callable(name) and fn is None:  # bare decorator
            name, fn = None, name

        def _do(f: Callable) -> Callable:
            key = name or f.__name__
            if key in self._entries and self._entries[key] is not f:
                raise ValueError(f"{self.kind} '{key}' is already registered by {self._entries[key].__module__}")
            self._entries[key] = f
            return f
        return _do(fn) if fn is not None else _do

    def names(self, filter: str = '') -> List[str]:
        _ensure_loaded()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatch(n, filter)] if filter else names

    def get(self, name: str) -> Callable[..., Any]:
        _ensure_loaded()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def create(self, name: str, **kwargs) -> Any:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        _ensure_loaded()
        return name in self._entries


# Modules whose import registers the built-in entries (they live beside what they create).
BUILTIN_MODULES = (
    'timm_multilabel.losses',
    'timm_multilabel.task',
    'timm_multilabel.mixing',
    'timm_multilabel.mile',
    'timm_multilabel.distill',
    'timm_multilabel.relabel.collate',
)


def _ensure_loaded() -> None:
    for module_name in BUILTIN_MODULES:
        try:
            import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
    load_plugins()


LOSSES = Registry('loss')
TARGET_TRANSFORMS = Registry('target transform')
TASKS = Registry('task')


def register_loss(name: Optional[str] = None, fn: Optional[Callable] = None):
    """Register a loss factory ``fn(**kwargs) -> nn.Module`` under ``name`` (decorator or call)."""
    return LOSSES.register(name, fn)


def create_loss(name: str, **kwargs) -> Any:
    """Create the loss registered as ``name``."""
    return LOSSES.create(name, **kwargs)


def list_losses(filter: str = '') -> List[str]:
    """Registered loss names, optionally filtered by a wildcard pattern."""
    return LOSSES.names(filter)


def register_target_transform(name: Optional[str] = None, fn: Optional[Callable] = None):
    """Register a target-transform factory (batch labels -> training targets) under ``name``."""
    return TARGET_TRANSFORMS.register(name, fn)


def create_target_transform(name: str, **kwargs) -> Any:
    """Create the target transform registered as ``name``."""
    return TARGET_TRANSFORMS.create(name, **kwargs)


def list_target_transforms(filter: str = '') -> List[str]:
    """Registered target-transform names, optionally filtered by a wildcard pattern."""
    return TARGET_TRANSFORMS.names(filter)


def register_task(name: Optional[str] = None, fn: Optional[Callable] = None):
    """Register a training-task factory ``fn(model, args, **kwargs) -> TrainingTask``."""
    return TASKS.register(name, fn)


def create_task(name: str, **kwargs) -> Any:
    """Create the training task registered as ``name``."""
    return TASKS.create(name, **kwargs)


def list_tasks(filter: str = '') -> List[str]:
    """Registered task names."""
    return TASKS.names(filter)
