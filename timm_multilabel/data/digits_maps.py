"""Label maps for the digit sets: oracle maps from the known cells, and a machine annotator.

ReLabel's pipeline in miniature (Yun et al., 2021, Sec. 3.1 and Appendix B):

* **Oracle maps** (``write_oracle_maps``): the maps a perfect annotator would write. Cell
  ``(r, c)`` of a ``grid x grid`` map (or a multiple) gets logit ``logit`` for the digit drawn
  there and ``fill`` for every other class; cells without a digit (``DigitsMain``'s empty
  cells) get ``fill`` for every class, which is *neutral*: the same logit for all classes adds
  nothing to any class when LabelPooling averages logits. ``fill`` must be the value training
  uses for classes outside a cell's top-K (train.py ``--relabel-fill``, default 0).
* **Machine maps**: ``train_digit_classifier`` trains a small timm classifier (``test_resnet``)
  on *single-digit labels*: 8x8 scikit-learn digits of the train pool only (disjoint from every
  test canvas), upscaled to its stride (32 px), laid out in 3x3 mosaics with blank windows, each
  feature-map cell trained on its own window's digit; the saved folder loads with
  ``timm.create_model('local-dir:DIR', pretrained=True)``. ``write_machine_maps`` (or
  ``timm-multilabel annotate --model local-dir:DIR --pretrained --img-size 128``) runs it fully
  convolutionally over whole canvases resized so that one feature-map cell spans one canvas cell
  (a 4x4-cell canvas at 4 x 32 = 128 px through a stride-32 network gives a 4x4 map).

Why the scale of the logits matters: LabelPooling averages the map's *logits* over the crop
and then takes a softmax, so a class covering a fraction ``a`` of the crop contributes
``a * logit``. On a whole canvas where the main digit covers a quarter, ``logit = 16`` gives
it a pooled logit of 4 against 1 for a one-cell distractor (p ~ 0.8), while ``logit = 6``
(a "calibrated" 99% cell) gives 1.5 against 0.4: a target close to uniform. The trained
annotator's head is re-centred (every cell's logits average to 0 over the classes; softmax
outputs unchanged), so that ``fill = 0`` is also neutral for its top-K maps, and scaled by a
temperature (``logit_scale``, 2.5) that gives its digit cells logits of ~15-20, as sharp as the oracle's.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

__all__ = [
    'DEFAULT_ORACLE_LOGIT', 'oracle_maps', 'write_oracle_maps', 'write_maps_folder', 'render_single_digits',
    'train_digit_classifier', 'load_digit_classifier', 'write_machine_maps', 'cell_accuracy',
]

_logger = logging.getLogger(__name__)

DEFAULT_ORACLE_LOGIT = 16.0


# ----------------------------------------------------------------------------- oracle maps

def _cell_digits(dataset: Any, indices: Sequence[int]) -> np.ndarray:
    """int64 [N, g, g]: each sample's cell digits (-1 = no digit)."""
    if not callable(getattr(dataset, 'cell_digits', None)):
        raise UserError(f'{type(dataset).__name__} has no cell_digits(i); oracle maps need known cells')
    return np.stack([np.asarray(dataset.cell_digits(int(i)), dtype=np.int64) for i in indices])


def oracle_maps(
        dataset: Any,
        indices: Optional[Sequence[int]] = None,
        map_size: Optional[int] = None,
        topk: int = 5,
        logit: float = DEFAULT_ORACLE_LOGIT,
        fill: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """Oracle label maps of ``dataset`` (a ``DigitsGrid`` or ``DigitsMain``) from its known cells.

    Args:
        dataset: has ``grid``, ``num_classes`` and ``cell_digits(i) -> int [grid, grid]`` (-1 = empty).
        indices: samples to map (default all).
        map_size: map side H = W, a multiple of ``grid`` (default ``grid``: one map cell per digit cell).
        topk: K classes stored per cell: the cell's digit first, then other classes at ``fill``.
        logit: score of the digit in its cells.
        fill: score of every other class (and of all classes in empty cells).

    Returns:
        ``scores [N, K, H, W]`` float32 (descending over K) and ``classes [N, K, H, W]`` int64;
        row 0 is the top of the image, column 0 the left.
    """
    grid = int(dataset.grid)
    num_classes = int(dataset.num_classes)
    size = grid if map_size is None else int(map_size)
    if size < grid or size % grid:
        raise UserError(f'oracle maps: map_size={map_size} must be a positive multiple of the grid ({grid})')
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= num_classes:
        raise UserError(f'oracle maps: topk must be an int in [1, {num_classes}], got {topk!r}')
    if not (math.isfinite(logit) and math.isfinite(fill)) or logit <= fill:
        raise UserError(f'oracle maps: logit ({logit}) must be finite and above fill ({fill})')
    indices = range(len(dataset)) if indices is None else list(indices)
    digits = _cell_digits(dataset, indices)  # [N, g, g]
    rep = size // grid
    digits = digits.repeat(rep, axis=1).repeat(rep, axis=2)  # [N, H, W]
    n = digits.shape[0]
    present = digits >= 0
    top = np.where(present, digits, 0)  # [N, H, W]
    # the other K-1 classes in ascending order, skipping the cell's digit (any K-1 would do: all at fill)
    others = np.arange(topk - 1)[None, :, None, None] + (np.arange(topk - 1)[None, :, None, None] >= top[:, None])
    classes = np.concatenate([top[:, None], others], axis=1)  # [N, K, H, W]
    # an empty cell: classes 0..K-1, all at fill
    classes = np.where(present[:, None], classes, np.arange(topk)[None, :, None, None])
    scores = np.full(classes.shape, float(fill), dtype=np.float32)
    scores[:, 0] = np.where(present, float(logit), float(fill))
    return torch.from_numpy(scores), torch.from_numpy(classes.astype(np.int64))


def write_maps_folder(
        output_dir: Union[str, os.PathLike],
        image_ids: Sequence[str],
        batches,
        info: Dict[str, Any],
        shard_size: int = 10000,
        overwrite: bool = False,
) -> Path:
    """Write a label-map dataset folder (Parquet shards + dataset card) with the project's writer.

    ``batches`` yields ``(scores [n, K, H, W], classes [n, K, H, W])`` for consecutive images of
    ``image_ids`` (in that order); ``info`` is the card's metadata (see ``write_dataset_card``; needs
    ``annotator``, ``input_size``, ``map_size``, ``topk``, ``dtype``, ``num_classes``). A folder that
    already holds maps is refused unless ``overwrite``.
    """
    from timm_multilabel.relabel.writer import (
        CARD_FILE, list_shards, remove_map_files, write_dataset_card, write_shard)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f'{out}: exists and is not a folder')
    if shard_size < 1:
        raise UserError(f'shard_size={shard_size}: must be >= 1')
    if out.is_dir() and (list_shards(str(out)) or (out / CARD_FILE).exists()):
        if not overwrite:
            raise UserError(f'{out} already holds label maps; pass overwrite=True to replace them')
        remove_map_files(str(out), everything=True)
    ids = list(image_ids)
    if not ids:
        raise UserError('label maps: no images to write')
    num_shards = math.ceil(len(ids) / shard_size)
    out.mkdir(parents=True, exist_ok=True)
    buf_s, buf_c, start, shard = [], [], 0, 0
    for scores, classes in batches:
        buf_s.append(scores)
        buf_c.append(classes)
        have = sum(len(s) for s in buf_s)
        while shard < num_shards and have >= min(shard_size, len(ids) - start):
            take = min(shard_size, len(ids) - start)
            s_all, c_all = torch.cat(buf_s), torch.cat(buf_c)
            write_shard(str(out), shard, num_shards, ids[start:start + take], s_all[:take], c_all[:take],
                        info['dtype'], int(info['num_classes']))
            buf_s, buf_c = [s_all[take:]], [c_all[take:]]
            start, shard = start + take, shard + 1
            have -= take
    if shard != num_shards or sum(len(s) for s in buf_s):
        raise UserError(f'label maps: {len(ids)} image ids but the maps do not match them in number')
    write_dataset_card(str(out), info)
    return out


def write_oracle_maps(
        dataset: Any,
        output_dir: Union[str, os.PathLike],
        map_size: Optional[int] = None,
        topk: int = 5,
        logit: float = DEFAULT_ORACLE_LOGIT,
        fill: float = 0.0,
        dtype: str = 'float32',
        shard_size: int = 10000,
        overwrite: bool = False,
        batch_size: int = 4096,
) -> Path:
    """Write oracle label maps (see ``oracle_maps``) of every sample of ``dataset`` as a label-map
    dataset folder keyed by ``dataset.image_ids``, readable by ``load_label_maps`` and
    ``datasets.load_dataset(folder, split='train')``; returns the folder.

    Train on them with ``--relabel-fill`` equal to ``fill``.
    """
    from timm_multilabel.relabel.maps import MAP_DTYPES
    if dtype not in MAP_DTYPES:
        raise UserError(f'oracle maps: unknown dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')
    # validate the arguments before anything is written
    oracle_maps(dataset, [0], map_size, topk, logit, fill)
    n = len(dataset)
    batches = (oracle_maps(dataset, range(a, min(n, a + batch_size)), map_size, topk, logit, fill)
               for a in range(0, n, batch_size))
    size = int(map_size or dataset.grid)
    info = {
        'annotator': 'oracle (known digit cells)',
        'weights': f'none: logit {logit:g} for the cell digit, {fill:g} for other classes and empty cells',
        'input_size': int(getattr(dataset, 'image_size', 0) or size),
        'map_size': (size, size), 'topk': topk, 'dtype': dtype, 'num_classes': int(dataset.num_classes),
        'class_names': list(getattr(dataset, 'class_names', None) or []) or None,
        'source': f'timm_multilabel.data.digits_maps.write_oracle_maps ({dataset!r})',
        'pretty_name': f'Oracle label maps of {type(dataset).__name__}',
    }
    return write_maps_folder(output_dir, list(dataset.image_ids), batches, info, shard_size, overwrite)


# ----------------------------------------------------------------------------- machine annotator

def render_single_digits(indices: Sequence[int], img_size: int) -> Tensor:
    """Source digits (indices into ``load_source_digits()``) as white-on-black float images in [0, 1],
    ``[N, 1, img_size, img_size]``, upscaled with nearest neighbour as the canvases draw them."""
    from .digits_grid import _render_cells, load_source_digits
    images, _ = load_source_digits()
    cells = _render_cells(images[np.asarray(indices, dtype=np.int64)], int(img_size))
    return torch.from_numpy(cells).float().div_(255.0)[:, None]


def _place(x: Tensor, gen: torch.Generator, size: Tuple[float, float], overhang: float) -> Tensor:
    """Draw each digit of ``x [N, 1, S, S]`` (a digit filling the image) at a random size and place:
    side a log-uniform fraction ``size`` of the image (> 1: bigger than the image, cropped), centre
    uniform over the positions that keep all but ``overhang`` (a fraction of the digit's side) of it
    inside, on black; one batched ``grid_sample``."""
    n = x.shape[0]
    lo, hi = math.log(size[0]), math.log(size[1])
    s = torch.exp(torch.rand(n, generator=gen) * (hi - lo) + lo)  # digit half-side in normalized coords
    reach = (1.0 - s).abs() + 2 * overhang * s
    c = (torch.rand(n, 2, generator=gen) * 2 - 1) * reach[:, None]  # digit centre in output coords
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 / s
    theta[:, 1, 1] = 1.0 / s
    theta[:, :, 2] = -c / s[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def _training_batch(x_train: Tensor, y_train: Tensor, idx: Tensor, gen: torch.Generator, context: int,
                    digit_size: Tuple[float, float], overhang: float, blank_prob: float,
                    num_classes: int, x_big: Optional[Tensor] = None, big_prob: float = 0.0
                    ) -> Tuple[Tensor, Tensor]:
    """One batch of the annotator's training mosaics and per-cell soft targets.

    The digits ``idx`` (``B * context**2`` of them) are each drawn in a window of the image size
    (random size and place, see ``_place``), a ``blank_prob`` fraction of windows left black with a
    uniform target, and laid out as ``context x context`` mosaics: images ``[B, 1, context*S, context*S]``
    and targets ``[B, context, context, C]`` (row 0 = top). With ``big_prob``, that fraction of mosaics
    gets one digit drawn over a 2x2 block of windows (from ``x_big``, digits at twice the size), each
    of its four cells labeled with it.
    """
    c = context
    x = _place(x_train[idx], gen, digit_size, overhang)  # [B*c*c, 1, S, S]
    target = F.one_hot(y_train[idx], num_classes).float()
    blank = torch.rand(len(idx), generator=gen) < blank_prob
    x = torch.where(blank[:, None, None, None], torch.zeros_like(x), x)
    target = torch.where(blank[:, None], torch.full_like(target, 1.0 / num_classes), target)
    b, s = len(idx) // (c * c), x.shape[-1]
    x = x[:b * c * c].reshape(b, c, c, s, s).permute(0, 1, 3, 2, 4).reshape(b, 1, c * s, c * s)
    target = target[:b * c * c].reshape(b, c, c, num_classes)
    if big_prob > 0 and x_big is not None and c >= 2:
        for j in torch.nonzero(torch.rand(b, generator=gen) < big_prob)[:, 0].tolist():
            k = idx[int(torch.randint(len(idx), (1,), generator=gen))]
            r, q = (int(v) for v in torch.randint(0, c - 1, (2,), generator=gen))
            x[j, :, r * s:(r + 2) * s, q * s:(q + 2) * s] = _place(x_big[k:k + 1], gen, digit_size, overhang)[0]
            target[j, r:r + 2, q:q + 2] = F.one_hot(y_train[k], num_classes).float()
    return x, target


def cell_logits(model: torch.nn.Module, images: Tensor) -> Tensor:
    """The classifier's head applied at every cell of its final feature map (as ``LabelMapAnnotator``):
    ``images [B, 3, H, W]`` -> logits ``[B, h, w, C]``."""
    feats = model.forward_features(images)
    b, ch, h, w = feats.shape
    cells = feats.permute(0, 2, 3, 1).reshape(b * h * w, ch, 1, 1)
    return model.forward_head(cells).reshape(b, h, w, -1)


def train_digit_classifier(
        output_dir: Union[str, os.PathLike],
        model_name: str = 'test_resnet',
        img_size: int = 32,
        epochs: int = 60,
        batch_size: int = 128,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        digit_size: Tuple[float, float] = (0.85, 1.05),
        overhang: float = 0.05,
        blank_prob: float = 0.25,
        context: int = 3,
        big_prob: float = 0.0,
        logit_scale: float = 2.5,
        seed: int = 0,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        **model_kwargs,
) -> Path:
    """Train the machine annotator: a timm classifier on single digits; save it as a model folder.

    Trains ``model_name`` (num_classes 10) from scratch with AdamW + cosine schedule on the
    *train* pool of scikit-learn's digits (``source_split_indices('train')``), each upscaled to
    ``img_size`` px (the network's stride: one feature-map cell per digit window), drawn at a random
    size (``digit_size``, a fraction of the window) and place (``overhang``), a ``blank_prob``
    fraction of windows left black with a uniform target (nothing to see). Windows are laid out as
    ``context x context`` mosaics and the head is trained at every cell of the final feature map
    (``cell_logits``, exactly what ``LabelMapAnnotator`` computes), so that each cell learns its own
    window's digit among neighbours, as in the canvases it will annotate; ``context=1`` trains on
    isolated digits. Each cell has a single label: the digit of its window (``big_prob``: a fraction of
    mosaics also holds one digit drawn over 2x2 windows, each of those cells labeled with it, for
    canvases with big objects).

    The head is then re-centred (each cell's logits average to 0 over classes; softmax unchanged),
    so that classes outside a stored top-K (``fill=0``) sit at the cell's mean logit and blank cells
    are neutral, and multiplied by ``logit_scale`` (a temperature; argmax unchanged). Since LabelPooling
    averages logits over a crop, the scale sets how sharp pooled targets are (see the module docstring).

    Writes ``output_dir`` with ``model.safetensors``, timm's ``config.json`` (input size
    ``img_size``, mean 0.5 / std 0.5, bilinear) and a model card whose ``top1`` is the accuracy on
    the held-out test-pool digits (isolated, one per image). Load it with
    ``timm.create_model('local-dir:' + output_dir, pretrained=True)`` or ``load_digit_classifier``.
    Returns ``Path(output_dir)``.
    """
    import timm
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from timm_multilabel.hub import save_model_folder
    from .digits_grid import load_source_digits, source_split_indices

    if not 0.0 <= blank_prob < 1.0:
        raise UserError(f'train_digit_classifier: blank_prob={blank_prob} must be in [0, 1)')
    if epochs < 1 or batch_size < 2 or img_size < 8:
        raise UserError('train_digit_classifier: epochs >= 1, batch_size >= 2 and img_size >= 8 are needed')
    if not 0 < digit_size[0] <= digit_size[1]:
        raise UserError(f'train_digit_classifier: digit_size={digit_size} must be 0 < low <= high')
    _, targets = load_source_digits()
    train_idx = source_split_indices('train', test_fraction, split_seed)
    test_idx = source_split_indices('test', test_fraction, split_seed)
    x_train = render_single_digits(train_idx, img_size)
    x_big = render_single_digits(train_idx, 2 * img_size) if big_prob > 0 else None
    y_train = torch.from_numpy(targets[train_idx].astype(np.int64))
    num_classes = 10

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                              pretrained_cfg_overlay=dict(input_size=(3, img_size, img_size), mean=(0.5,) * 3,
                                                          std=(0.5,) * 3, interpolation='bilinear', crop_pct=1.0),
                              **model_kwargs)
    cells = context * context
    if batch_size < cells:
        raise UserError(f'train_digit_classifier: batch_size={batch_size} holds no {context}x{context} mosaic')
    steps_per_epoch = max(1, len(x_train) // batch_size)
    optimizer = create_optimizer_v2(model, 'adamw', lr=lr, weight_decay=weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs * steps_per_epoch, warmup_t=steps_per_epoch,
                                  warmup_lr_init=lr * 0.01, t_in_epochs=False)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x, target = _training_batch(x_train, y_train, idx, gen, context, digit_size, overhang, blank_prob,
                                        num_classes, x_big, big_prob)
            logits = cell_logits(model, (x.expand(-1, 3, -1, -1) - 0.5) / 0.5)  # [B, c, c, C]
            if logits.shape[1:3] != target.shape[1:3]:
                raise UserError(f'train_digit_classifier: {model_name} gives a {tuple(logits.shape[1:3])} map for '
                                f'{context}x{context} windows of {img_size} px; img_size must be its stride')
            loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
    _center_head(model, logit_scale)
    model.eval()
    with torch.inference_mode():
        x_test = render_single_digits(test_idx, img_size)
        pred = model((x_test.expand(-1, 3, -1, -1) - 0.5) / 0.5).argmax(-1).numpy()
    top1 = float((pred == targets[test_idx]).mean() * 100.0)
    _logger.info('digit classifier %s: %.2f%% on %d held-out single digits', model_name, top1, len(test_idx))
    return save_model_folder(
        model, output_dir, model_name=model_name, num_classes=num_classes, label_names=[str(d) for d in range(10)],
        data_config=dict(input_size=(3, img_size, img_size), mean=(0.5,) * 3, std=(0.5,) * 3,
                         interpolation='bilinear', crop_pct=1.0),
        metrics={'top1': top1}, dataset='scikit-learn digits (train pool, single digits)', eval_split='test pool')


def _center_head(model: torch.nn.Module, scale: float = 1.0) -> None:
    """Make every output's logits average to 0 over classes (softmax unchanged) by subtracting the
    class-mean of the last linear layer's weight rows and bias; then multiply them by ``scale``
    (a temperature: argmax unchanged, confidence sharpened for ``scale > 1``)."""
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    if not isinstance(head, (torch.nn.Linear, torch.nn.Conv2d)):
        raise UserError(f'{type(model).__name__}: cannot re-centre a {type(head).__name__} classifier')
    with torch.no_grad():
        head.weight -= head.weight.mean(0, keepdim=True)
        if head.bias is not None:
            head.bias -= head.bias.mean()
        head.weight *= scale
        if head.bias is not None:
            head.bias *= scale


def load_digit_classifier(model_dir: Union[str, os.PathLike]) -> torch.nn.Module:
    """The classifier saved by ``train_digit_classifier``, in eval mode (``local-dir:`` timm load)."""
    import timm
    path = Path(model_dir)
    if not (path / 'config.json').is_file():
        raise UserError(f'{path}: no timm model folder (config.json missing)')
    return timm.create_model(f'local-dir:{path.resolve()}', pretrained=True).eval()


def write_machine_maps(
        dataset: Any,
        model_dir: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        img_size: Optional[int] = None,
        topk: int = 5,
        dtype: str = 'float16',
        batch_size: int = 256,
        shard_size: int = 10000,
        overwrite: bool = False,
) -> Path:
    """Annotate every image of ``dataset`` with the classifier in ``model_dir`` run fully
    convolutionally (``LabelMapAnnotator``) and write the label-map folder; returns it.

    ``img_size`` (default ``grid * the classifier's input size``) is the side the whole canvas is
    resized to, so that each map cell of a stride-``img_size``-per-cell network covers one canvas cell.
    This is what ``timm-multilabel annotate --model local-dir:DIR --pretrained --img-size S`` does on
    an exported image folder, without writing the images.
    """
    from timm_multilabel.relabel.annotate import LabelMapAnnotator
    from timm_multilabel.relabel.maps import MAP_DTYPES
    if dtype not in MAP_DTYPES:
        raise UserError(f'machine maps: unknown dtype {dtype!r}; choose one of {", ".join(MAP_DTYPES)}')
    model = load_digit_classifier(model_dir)
    window = int(model.pretrained_cfg['input_size'][-1])
    size = int(img_size or int(dataset.grid) * window)
    annotator = LabelMapAnnotator(model, topk=topk, img_size=size)
    transform = annotator.transform
    n = len(dataset)

    def batches():
        with torch.inference_mode():
            for a in range(0, n, batch_size):
                from PIL import Image
                x = torch.stack([transform(Image.fromarray(dataset.image_array(i)))
                                 for i in range(a, min(n, a + batch_size))])
                yield annotator(x)

    c = annotator.data_config
    info = {
        'annotator': f'local-dir:{Path(model_dir).resolve()}',
        'weights': str(Path(model_dir) / 'model.safetensors'),
        'input_size': size, 'map_size': annotator.map_size, 'topk': topk, 'dtype': dtype,
        'num_classes': annotator.num_classes, 'class_names': list(getattr(dataset, 'class_names', []) or []) or None,
        'mean': list(c['mean']), 'std': list(c['std']), 'interpolation': c['interpolation'],
        'source': 'timm_multilabel.data.digits_maps.write_machine_maps',
        'pretty_name': f'Machine label maps of {type(dataset).__name__}',
    }
    return write_maps_folder(output_dir, list(dataset.image_ids), batches(), info, shard_size, overwrite)


def cell_accuracy(dataset: Any, scores: Tensor, classes: Tensor, indices: Optional[Sequence[int]] = None
                  ) -> Dict[str, float]:
    """How often a map's top class at each cell equals the digit drawn there (maps of ``grid x grid``).

    ``scores`` / ``classes`` ``[N, K, g, g]`` for ``indices`` (default the first N samples). Returns
    ``digit_cells`` (all cells holding a digit), and for ``DigitsMain`` also ``main_cells`` and
    ``distractor_cells``, in percent.
    """
    n = scores.shape[0]
    indices = list(range(n)) if indices is None else list(indices)
    digits = torch.from_numpy(_cell_digits(dataset, indices))  # [N, g, g]
    if tuple(classes.shape[-2:]) != tuple(digits.shape[-2:]):
        raise UserError(f'cell_accuracy: maps of {tuple(classes.shape[-2:])} cells for a grid of '
                        f'{tuple(digits.shape[-2:])}')
    top = classes[:, 0]
    right = (top == digits)
    out = {'digit_cells': float(right[digits >= 0].float().mean() * 100)}
    in_main = getattr(dataset, '_in_main', None)
    if in_main is not None:
        main = torch.from_numpy(np.asarray(in_main)[indices])
        out['main_cells'] = float(right[main].float().mean() * 100)
        dis = (digits >= 0) & ~main
        out['distractor_cells'] = float(right[dis].float().mean() * 100) if bool(dis.any()) else float('nan')
    return out
