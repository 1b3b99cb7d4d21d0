"""An image with the heat maps of its top label-map classes (ReLabel Fig. A2); ``timm-multilabel show``.

The image's top classes are those of the whole map pooled (every cell's top-K logits scattered
into the C classes, absent classes at 0, averaged over cells, softmax), as LabelPooling does
for a crop that covers the whole image. Each class's heat map is its row of the map,
``L[c, :, :]`` (logits; cells where c is not among the top K are drawn at the map's lowest
score), stretched over the whole image: the map covers the whole image, row 0 at the top.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from timm_multilabel.errors import UserError
from timm_multilabel.fileio import atomic_path
from .image_folder import read_image
from .store import load_label_maps

__all__ = ['top_classes', 'class_heat_map', 'render_label_map', 'show_label_map']


def top_classes(scores: Tensor, classes: Tensor, num_classes: int, topk: int = 2) -> List[Tuple[int, float]]:
    """The ``topk`` classes of the whole map ``scores / classes [K, H, W]``, as ``(class, prob)``:
    global average of the densified map (absent classes 0), softmax."""
    dense = torch.zeros(num_classes, *scores.shape[-2:]).scatter_(0, classes.long(), scores.float())
    prob = dense.mean((1, 2)).softmax(0)
    p, c = prob.topk(min(topk, num_classes))
    return [(int(ci), float(pi)) for ci, pi in zip(c, p)]


def class_heat_map(scores: Tensor, classes: Tensor, cls: int) -> np.ndarray:
    """``L[cls]`` as ``[H, W]``: the score of ``cls`` at each cell, the map's lowest score where
    ``cls`` is not among the cell's top K."""
    hit = classes == cls
    heat = torch.where(hit, scores, torch.full_like(scores, float(scores.min()))).amax(0)
    return heat.numpy()


def render_label_map(image, scores: Tensor, classes: Tensor, class_names: Optional[Sequence[str]] = None,
                     num_classes: Optional[int] = None, topk: int = 2, title: Optional[str] = None):
    """Figure: the image, then one panel per top class with its heat map over the image.
    Returns ``(figure, [(class, name, prob, heat [H, W]), ...])``."""
    from matplotlib.figure import Figure

    num_classes = num_classes or (len(class_names) if class_names else int(classes.max()) + 1)
    top = top_classes(scores, classes, num_classes, topk)
    img = np.asarray(image.convert('RGB'))
    h_img, w_img = img.shape[:2]
    lo, hi = float(scores.min()), float(scores.max())
    fig = Figure(figsize=(3.2 * (len(top) + 1), 3.4), dpi=100)
    axes = fig.subplots(1, len(top) + 1, squeeze=False)[0]
    axes[0].imshow(img)
    # class names and file names are text, never matplotlib mathtext ('$' in a name must not fail)
    axes[0].set_title(title or 'image', fontsize=9, parse_math=False)
    rows = []
    for ax, (c, p) in zip(axes[1:], top):
        heat = class_heat_map(scores, classes, c)
        name = class_names[c] if class_names and c < len(class_names) else f'class {c}'
        ax.imshow(img)
        im = ax.imshow(heat, cmap='jet', alpha=0.5, vmin=lo, vmax=hi, interpolation='bilinear',
                       extent=(0, w_img, h_img, 0))  # cell (0, 0) is the top-left corner of the image
        ax.set_title(f'{name.split(",")[0]} ({p:.2f})', fontsize=9, parse_math=False)
        rows.append((c, name, p, heat))
    for ax in axes:
        ax.set_axis_off()
    if top:
        fig.colorbar(im, ax=list(axes[1:]), fraction=0.025, pad=0.02, label='logit')
    return fig, rows


def _find_image_id(store, image_path: str) -> str:
    stem = os.path.splitext(os.path.normpath(image_path))[0].replace(os.sep, '/').lstrip('./')
    parts = stem.split('/')
    for i in range(len(parts)):
        candidate = '/'.join(parts[i:])
        if candidate in store:
            return candidate
    raise UserError(f'no label map for {image_path} (tried {"/".join(parts[-2:])!r} and its suffixes); '
                    f'give --image-id')


def show_label_map(maps: str, image_path: str, out: str, image_id: Optional[str] = None, topk: int = 2,
                   cache_dir: Optional[str] = None) -> List[Tuple[int, str, float, np.ndarray]]:
    """Draw ``image_path`` with its label-map heat maps to the PNG ``out``; returns the panels' rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if topk < 1:
        raise UserError('--topk must be >= 1')
    if not out.lower().endswith('.png'):
        raise UserError(f'--out {out} must be a .png file')
    image = read_image(image_path)
    store = load_label_maps(maps, cache_dir=cache_dir)
    image_id = image_id or _find_image_id(store, image_path)
    if image_id not in store:
        raise UserError(f'no label map for image id {image_id!r} in {maps}')
    scores, classes = store[image_id]
    fig, rows = render_label_map(image, scores, classes, store.class_names, store.num_classes, topk,
                                 title=image_id)
    FigureCanvasAgg(fig)
    with atomic_path(os.path.abspath(out), suffix='.png') as tmp:
        fig.savefig(tmp, format='png', bbox_inches='tight')
    return rows

