"""The machine annotator of the digit sets: a small timm classifier trained on single digits, to be run
fully convolutionally over whole canvases (ReLabel's annotator in miniature, Yun et al., 2021, Appendix B).

``train_digit_classifier`` trains it on *single-digit labels* (8x8 scikit-learn digits of the train pool
only, disjoint from every test canvas, upscaled to the network's stride, 32 px), laid out in 3x3
mosaics with blank windows, each feature-map cell trained on its own window's digit, and saves it as a
timm model folder (``timm.create_model('local-dir:DIR', pretrained=True)`` loads it);
:func:`timm_multilabel.relabel.digit_maps.write_machine_maps` writes its maps.

The head is re-centred (every cell's logits average to 0 over the classes; softmax outputs unchanged),
so that ``fill = 0`` is neutral for its top-K maps, and scaled by a temperature (``logit_scale``, 2.5)
that gives its digit cells logits of ~15-20, as sharp as the oracle's (see
:mod:`timm_multilabel.data.digits_maps` for why the scale matters).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import Tensor

from ..data.digits_grid import load_source_digits, source_split_indices
from ..data.digits_maps import render_single_digits
from ..errors import UserError
from ..hub import save_model_folder
from ..relabel.annotate import LabelMapAnnotator

__all__ = ['train_digit_classifier', 'center_head']

_logger = logging.getLogger(__name__)


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
    (``LabelMapAnnotator.dense``, exactly what annotation computes), so that each cell learns its own
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
    # the annotator's own per-cell head, in training mode: what the cells learn is what annotation reads
    annotator = LabelMapAnnotator(model, topk=1, img_size=context * img_size, eval_mode=False)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x, target = _training_batch(x_train, y_train, idx, gen, context, digit_size, overhang, blank_prob,
                                        num_classes, x_big, big_prob)
            logits = annotator.dense((x.expand(-1, 3, -1, -1) - 0.5) / 0.5).permute(0, 2, 3, 1)  # [B, c, c, C]
            if logits.shape[1:3] != target.shape[1:3]:
                raise UserError(f'train_digit_classifier: {model_name} gives a {tuple(logits.shape[1:3])} map for '
                                f'{context}x{context} windows of {img_size} px; img_size must be its stride')
            loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
    center_head(model, logit_scale)
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


def center_head(model: torch.nn.Module, scale: float = 1.0) -> None:
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
