"""LabelPoolingCollate: a DataLoader ``collate_fn`` that turns crop boxes into ReLabel targets.

    store = load_label_maps(path)
    check_maps_cover(store, train_ds.image_ids, num_classes)          # before any training
    loader = DataLoader(BoxedDataset(ds, create_box_transform(...)), batch_size=256,
                        shuffle=True, drop_last=True, num_workers=8,
                        collate_fn=LabelPoolingCollate(store, num_classes, mixup=mixup))
    for images, targets in loader:   # targets: soft Tensor[B, C], rows sum to 1
        loss = SoftTargetCrossEntropy()(model(images), targets)

Order of operations per batch (ReLabel Algorithm A1, then mixing):
    1. look up each sample's map by ``image_id`` (``store.get_batch``);
    2. ``label_pool`` over its crop box (or the whole image with ``global_pool``); multi-cell
       targets of horizontally flipped crops are mirrored left-right (a 1x1 target is unchanged);
    3. ``hard``: one-hot of the argmax (the paper's single-label ablations);
    4. ``smoothing``: ``t * (1 - s) + s / C``;
    5. ``mixup`` (timm ``Mixup(multi_label=True, label_smoothing=0)``): images and pooled targets
       are mixed with the same lambda; CutMix's area-corrected lambda makes the target the
       area-weighted mix of the two crops' pooled targets. It runs in the DataLoader workers;
       alternatively leave ``mixup=None`` and call the same Mixup on ``(images, targets)`` in the
       training loop (on the device) -- the numbers are the same.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from timm_multilabel.errors import UserError
from timm_multilabel.registry import register_target_transform
from timm_multilabel.relabel.pooling import _pair, label_pool
from timm_multilabel.relabel.store import load_label_maps

__all__ = ['LabelPoolingCollate', 'check_maps_cover']


def _check_mixup(mixup: Any, num_classes: int) -> None:
    if not callable(mixup):
        raise UserError(f"LabelPoolingCollate: mixup must be a timm Mixup, got {type(mixup).__name__}")
    if getattr(mixup, 'multi_label', True) is not True or getattr(mixup, 'label_smoothing', 0.0):
        raise UserError("LabelPoolingCollate: mixup of pooled soft targets needs timm "
                        "Mixup(multi_label=True, label_smoothing=0.0); use the collate's smoothing= instead")
    if getattr(mixup, 'num_classes', num_classes) != num_classes:
        raise UserError(f"LabelPoolingCollate: mixup.num_classes={mixup.num_classes} != num_classes={num_classes}")


@register_target_transform('label_pooling')
class LabelPoolingCollate:
    """Collate ``(Tensor[3, h, w], sample dict)`` items of :class:`BoxedDataset` into
    ``(images Tensor[B, 3, h, w], targets)`` with ReLabel's LabelPooling.

    Args:
        store: label-map store (``get_batch(ids) -> (scores [N, K, H, W], classes [N, K, H, W])``),
            or a path / Hub id for ``load_label_maps``.
        num_classes: C, the model's classes; map class ids must be below it.
        fill: logit of classes outside a cell's top-K (0.0, as the official code).
        output_size: 1 for ``[B, C]`` targets, or ``(oh, ow)`` for dense ``[B, C, oh, ow]`` ones.
        mixup: optional timm ``Mixup(multi_label=True, label_smoothing=0.0, num_classes=C)``,
            applied after pooling (1x1 targets only); odd batches are left unmixed.
        global_pool: pool over the whole image ``(0, 0, 1, 1)`` whatever the crop (the paper's
            global multi-label ablation; with ``hard`` the global single label).
        hard: one-hot of the pooled argmax (localized single label; global with ``global_pool``).
        smoothing: label smoothing of the soft target toward uniform, before mixing.
        sampling_ratio, aligned: RoIAlign conventions, see :func:`label_pool`.
        return_labels: also return the dataset's labels Tensor[B] (int64) as a third item.
    """

    def __init__(
            self,
            store: Any,
            num_classes: int,
            fill: float = 0.0,
            output_size: Union[int, Tuple[int, int]] = 1,
            mixup: Optional[Any] = None,
            global_pool: bool = False,
            hard: bool = False,
            smoothing: float = 0.0,
            sampling_ratio: int = -1,
            aligned: bool = False,
            return_labels: bool = False,
    ):
        if isinstance(store, (str, os.PathLike)):
            store = load_label_maps(store)
        if not hasattr(store, 'get_batch'):
            raise UserError(f"LabelPoolingCollate: store must be a LabelMapStore, got {type(store).__name__}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
            raise UserError(f"LabelPoolingCollate: num_classes must be a positive int, got {num_classes!r}")
        self.output_size = _pair(output_size)
        multi_cell = self.output_size != (1, 1)
        if multi_cell and global_pool:
            raise UserError("LabelPoolingCollate: global_pool gives one target per image; use output_size=1")
        if mixup is not None:
            _check_mixup(mixup, num_classes)
            if multi_cell:
                raise UserError("LabelPoolingCollate: mixup/cutmix of multi-cell targets is not supported; "
                                "use output_size=1")
        if not 0.0 <= smoothing < 1.0:
            raise UserError(f"LabelPoolingCollate: smoothing must be in [0, 1), got {smoothing}")
        self.store = store
        self.num_classes = num_classes
        self.fill = float(fill)
        self.mixup = mixup
        self.global_pool = global_pool
        self.hard = hard
        self.smoothing = smoothing
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.return_labels = return_labels
        self._warned_odd = False

    def pool(self, image_ids: Sequence[str], boxes: Tensor, flipped: Tensor) -> Tensor:
        """Targets for a batch before mixing: Tensor[B, C] or Tensor[B, C, oh, ow].

        Args:
            image_ids: B map ids; boxes: Tensor[B, 4] normalized (x1, y1, x2, y2);
            flipped: bool Tensor[B], horizontally flipped crops.
        """
        scores, classes = self.store.get_batch(list(image_ids))
        if self.global_pool:
            boxes = boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(image_ids), 4)
        targets = label_pool(scores, classes, boxes.float(), self.num_classes, self.output_size,
                             self.fill, self.sampling_ratio, self.aligned)
        if targets.ndim == 4 and bool(flipped.any()):
            targets = torch.where(flipped[:, None, None, None], targets.flip(-1), targets)
        if self.hard:
            targets = torch.zeros_like(targets).scatter_(1, targets.argmax(1, keepdim=True), 1.0)
        if self.smoothing:
            targets = targets * (1.0 - self.smoothing) + self.smoothing / self.num_classes
        return targets

    def __call__(self, batch: List[Tuple[Tensor, Dict[str, Any]]]) -> Tuple[Tensor, ...]:
        if not batch or not isinstance(batch[0], (tuple, list)) or len(batch[0]) != 2 \
                or not isinstance(batch[0][1], dict):
            raise UserError("LabelPoolingCollate: expects BoxedDataset items (image, {'image_id', 'box', 'flipped', "
                            "'label'})")
        images = torch.stack([img for img, _ in batch])
        meta = [m for _, m in batch]
        boxes = torch.stack([torch.as_tensor(m['box'], dtype=torch.float32) for m in meta])
        flipped = torch.tensor([bool(m.get('flipped', False)) for m in meta])
        targets = self.pool([m['image_id'] for m in meta], boxes, flipped)
        if self.mixup is not None:
            if len(batch) % 2 == 0:
                images, targets = self.mixup(images.float(), targets)
            elif not self._warned_odd:
                warnings.warn(f"LabelPoolingCollate: batch of {len(batch)} is odd, left unmixed "
                              f"(use drop_last=True)", UserWarning)
                self._warned_odd = True
        if self.return_labels:
            return images, targets, torch.tensor([int(m['label']) for m in meta], dtype=torch.long)
        return images, targets

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, fill={self.fill}, '
                f'output_size={self.output_size}, global_pool={self.global_pool}, hard={self.hard}, '
                f'smoothing={self.smoothing}, mixup={type(self.mixup).__name__ if self.mixup else None})')


def check_maps_cover(store: Any, image_ids: Sequence[str], num_classes: int, scan: bool = False,
                     chunk_size: int = 512) -> None:
    """Refuse, in one line (``UserError``), label maps that cannot train this model.

    Checks that every training image has a map (``store.missing``), and that map class ids are
    below ``num_classes``: from the store's declared ``num_classes`` (cheap), and, with
    ``scan=True`` or when the store declares none, from the maps themselves.
    """
    ids = list(image_ids)
    missing = list(store.missing(ids))
    if missing:
        raise UserError(f"label maps miss {len(missing)} of {len(ids)} training images "
                        f"(e.g. '{missing[0]}')")
    declared = getattr(store, 'num_classes', None)
    if declared is not None and declared > num_classes:
        raise UserError(f"label maps have {declared} classes (ids up to {declared - 1}) but the model has "
                        f"{num_classes}: map class ids must index the model's classes")
    if scan or declared is None:
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start:start + chunk_size]
            _, classes = store.get_batch(chunk)
            if classes.numel() == 0:
                continue
            flat = classes.reshape(len(chunk), -1)
            bad = (flat >= num_classes).any(1) | (flat < 0).any(1)
            if bool(bad.any()):
                k = int(bad.nonzero()[0, 0])
                lo, hi = (int(v) for v in torch.aminmax(flat[k]))
                raise UserError(f"label map of '{chunk[k]}' has class ids in [{lo}, {hi}], outside "
                                f"[0, {num_classes - 1}] for the model's {num_classes} classes")
