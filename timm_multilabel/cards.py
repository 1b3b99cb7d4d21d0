"""Locate and render the Hub card templates of ``hub_cards/`` (Jinja2, through huggingface_hub's card classes).

The templates live in the repository's top-level ``hub_cards/`` folder. An installed (non-editable)
package carries them as package data under ``timm_multilabel/hub_cards/``; a source checkout or an
editable install finds them next to the package folder. Both places are searched, in that order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Type

from huggingface_hub import ModelCard

__all__ = ['CARDS_DIRNAME', 'cards_dirs', 'template_path', 'render_card']

CARDS_DIRNAME = 'hub_cards'
_PACKAGE_DIR = Path(__file__).resolve().parent


def cards_dirs() -> List[Path]:
    """Folders searched for templates, first match wins: package data, then the source checkout's ``hub_cards/``."""
    return [_PACKAGE_DIR / CARDS_DIRNAME, _PACKAGE_DIR.parent / CARDS_DIRNAME]


def template_path(name: str) -> Path:
    """Path of template ``name`` (e.g. ``'model_card.md'``); FileNotFoundError names every place searched."""
    for folder in cards_dirs():
        path = folder / name
        if path.is_file():
            return path
    searched = ', '.join(str(d) for d in cards_dirs())
    raise FileNotFoundError(f'card template {name!r} not found (searched {searched}); the package is incomplete')


def render_card(name: str, card_data: Any, card_cls: Optional[Type] = None, **template_kwargs: Any):
    """Render template ``name`` with ``card_data`` (a ``ModelCardData`` / ``DatasetCardData``) into a card.

    Args:
        name: template file name in ``hub_cards/``.
        card_data: the YAML metadata; rendered into the template as ``{{ card_data }}``, its fields are
            also template variables.
        card_cls: ``ModelCard`` (default) or ``DatasetCard``.
        **template_kwargs: further template variables (they take priority over card_data's fields).

    Returns:
        a ``card_cls`` instance; ``card.save(path)`` writes it.
    """
    if card_cls is None:
        card_cls = ModelCard
    return card_cls.from_template(card_data, template_path=str(template_path(name)), **template_kwargs)
