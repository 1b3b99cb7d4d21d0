"""Training transforms that report the crop box and flip that LabelPooling needs.

``create_box_transform(**create_transform_kwargs)`` builds timm's training pipeline with
``timm.data.create_transform(is_training=True, separate=True, ...)`` and swaps its crop and
horizontal flip for box-aware twins that draw the same random numbers:

    img (PIL) -> RandomResizedCropWithBox -> RandomHorizontalFlipWithFlag
              -> timm's secondary (RandAugment / AutoAugment / AugMix / color jitter ...)
              -> timm's final (ToTensor, Normalize, RandomErasing)
              => (Tensor[3, h, w], box Tensor[4] (x1, y1, x2, y2) normalized, flipped bool)

Spatial augmentation ops (Rotate, ShearX/Y, TranslateX/Y[Rel]) move image content without
moving the box, so by default they are removed from RandAugment / AutoAugment / AugMix with a
warning (``keep_spatial_aug=True`` keeps them; targets then ignore them). Vertical flip, the
RandomResizeKeepRatio crop modes and NaFlex are refused. Evaluation transforms are timm's,
unchanged: ``timm.data.create_transform(is_training=False, ...)``.
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as F
from torch import Tensor
from torchvision import transforms

from timm.data import create_transform
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from timm.data.transforms import RandomResizedCropAndInterpolation

from timm_multilabel.errors import UserError

__all__ = [
    'RandomResizedCropWithBox', 'RandomHorizontalFlipWithFlag', 'BoxTransform', 'create_box_transform',
    'drop_spatial_augment_ops', 'SPATIAL_AUGMENT_OPS',
]

# timm auto-augment op names that move pixels (the crop box would no longer match the content)
SPATIAL_AUGMENT_OPS = frozenset({
    'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'TranslateXRel', 'TranslateYRel',
})


class RandomResizedCropWithBox(RandomResizedCropAndInterpolation):
    """timm's ``RandomResizedCropAndInterpolation`` (same ``get_params``, same random draws) that
    also gives the crop's normalized box ``(x1, y1, x2, y2)`` in the whole image, x horizontal.

    ``crop_with_box(img) -> (img, Tensor[4])``; calling the transform returns only the image
    (a drop-in for timm's) and keeps the box in ``last_box``.
    """

    last_box: Optional[Tensor] = None

    @classmethod
    def from_timm(cls, t: RandomResizedCropAndInterpolation) -> 'RandomResizedCropWithBox':
        """The box-aware twin of an existing timm crop (size, scale, ratio, interpolation)."""
        new = cls(t.size, scale=t.scale, ratio=t.ratio)
        new.interpolation = t.interpolation
        return new

    def crop_with_box(self, img: Any) -> Tuple[Any, Tensor]:
        i, j, h, w = self.get_params(img, self.scale, self.ratio)
        if isinstance(self.interpolation, (tuple, list)):
            interpolation = random.choice(self.interpolation)
        else:
            interpolation = self.interpolation
        img_w, img_h = F.get_image_size(img)
        box = torch.tensor([j / img_w, i / img_h, (j + w) / img_w, (i + h) / img_h], dtype=torch.float32)
        return F.resized_crop(img, i, j, h, w, self.size, interpolation), box

    def __call__(self, img: Any) -> Any:
        img, self.last_box = self.crop_with_box(img)
        return img


class RandomHorizontalFlipWithFlag(transforms.RandomHorizontalFlip):
    """torchvision's ``RandomHorizontalFlip`` (same ``torch.rand`` draw) that reports whether it
    flipped: ``flip_with_flag(img) -> (img, bool)``; ``forward`` keeps it in ``last_flipped``."""

    last_flipped: bool = False

    def flip_with_flag(self, img: Any) -> Tuple[Any, bool]:
        if torch.rand(1) < self.p:
            return F.hflip(img), True
        return img, False

    def forward(self, img: Any) -> Any:
        img, self.last_flipped = self.flip_with_flag(img)
        return img


class BoxTransform:
    """``img -> (Tensor[3, h, w], box Tensor[4], flipped bool)``: crop (with box), optional flip,
    then timm's secondary and final stages."""

    def __init__(
            self,
            crop: RandomResizedCropWithBox,
            flip: Optional[RandomHorizontalFlipWithFlag],
            secondary: Callable,
            final: Callable,
    ):
        self.crop = crop
        self.flip = flip
        self.secondary = secondary
        self.final = final

    def __call__(self, img: Any) -> Tuple[Tensor, Tensor, bool]:
        img, box = self.crop.crop_with_box(img)
        flipped = False
        if self.flip is not None:
            img, flipped = self.flip.flip_with_flag(img)
        img = self.final(self.secondary(img))
        return img, box, flipped

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(\n  crop={self.crop},\n  flip={self.flip},\n'
                f'  secondary={self.secondary},\n  final={self.final})')


def _keep(ops: List[Any]) -> List[Any]:
    return [op for op in ops if getattr(op, 'name', None) not in SPATIAL_AUGMENT_OPS]


def drop_spatial_augment_ops(t: Any) -> List[str]:
    """Remove spatial ops from timm's RandAugment / AutoAugment / AugMix inside ``t`` (a
    Compose or one of those), in place; returns the removed op names (sorted, unique)."""
    removed: List[str] = []
    for aug in getattr(t, 'transforms', [t]):
        if isinstance(aug, RandAugment):
            keep = [i for i, op in enumerate(aug.ops) if op.name not in SPATIAL_AUGMENT_OPS]
            removed += [op.name for i, op in enumerate(aug.ops) if i not in keep]
            if aug.choice_weights is not None:
                w = np.asarray(aug.choice_weights, dtype=np.float64)[keep]
                aug.choice_weights = w / w.sum()
                aug.num_layers = min(aug.num_layers, len(keep))  # weighted choice draws without replacement
            aug.ops = [aug.ops[i] for i in keep]
        elif isinstance(aug, AutoAugment):
            removed += [op.name for sub in aug.policy for op in sub if op.name in SPATIAL_AUGMENT_OPS]
            aug.policy = [kept for kept in (_keep(sub) for sub in aug.policy) if kept]
        elif isinstance(aug, AugMixAugment):
            removed += [op.name for op in aug.ops if op.name in SPATIAL_AUGMENT_OPS]
            aug.ops = _keep(aug.ops)
    return sorted(set(removed))


_REFUSED = {
    'no_aug': 'use scale=(1, 1) and hflip=0 for a deterministic box',
    'naflex': 'NaFlex crops are not boxes',
    'tf_preprocessing': 'TF preprocessing has no crop box',
}


def create_box_transform(keep_spatial_aug: bool = False, **kwargs: Any) -> BoxTransform:
    """timm's training transform, box-aware for LabelPooling.

    Args:
        keep_spatial_aug: keep Rotate/Shear/Translate auto-augment ops (pooled targets then
            ignore them); by default they are removed with a warning.
        **kwargs: keyword arguments of ``timm.data.create_transform`` for training (input_size,
            scale, ratio, hflip, color_jitter, auto_augment, interpolation, mean, std, re_prob,
            ...). ``vflip > 0`` and ``train_crop_mode`` other than 'rrc' are refused.

    Returns:
        BoxTransform: ``img -> (Tensor[3, h, w], box Tensor[4] (x1, y1, x2, y2), flipped bool)``.
    """
    if kwargs.pop('is_training', True) is not True:
        raise UserError("create_box_transform: is_training=False; use timm.data.create_transform for evaluation")
    kwargs.pop('separate', None)  # the three stages are always separate here
    for key, why in _REFUSED.items():
        if kwargs.get(key):
            raise UserError(f"create_box_transform: {key}={kwargs[key]!r} is not supported with label maps ({why})")
    if kwargs.get('vflip', 0.0):
        raise UserError(f"create_box_transform: vflip={kwargs['vflip']} is not supported with label maps "
                        f"(a vertical flip would have to mirror the map)")
    if kwargs.get('train_crop_mode') not in (None, 'rrc'):
        raise UserError(f"create_box_transform: train_crop_mode={kwargs['train_crop_mode']!r} is not supported "
                        f"with label maps; use 'rrc'")
    primary, secondary, final = create_transform(is_training=True, separate=True, **kwargs)
    crop, flip = None, None
    for t in primary.transforms:
        if isinstance(t, RandomResizedCropAndInterpolation):
            crop = RandomResizedCropWithBox.from_timm(t)
        elif isinstance(t, transforms.RandomHorizontalFlip):
            flip = RandomHorizontalFlipWithFlag(p=t.p)
        else:  # pragma: no cover - timm added a primary stage this module does not know
            raise UserError(f"create_box_transform: unsupported primary transform {t} for label maps")
    if crop is None:  # pragma: no cover
        raise UserError("create_box_transform: timm's training transform has no RandomResizedCrop")
    if not keep_spatial_aug:
        removed = drop_spatial_augment_ops(secondary)
        if removed:
            warnings.warn(f"label maps: removed spatial auto-augment ops {', '.join(removed)} "
                          f"(they would move pixels out of the crop box); pass keep_spatial_aug=True to keep them",
                          UserWarning, stacklevel=2)
    return BoxTransform(crop, flip, secondary, final)
