"""timm's prefetcher loading on Accelerate: uint8 images from the workers, normalized a batch at a time.

timm's train.py (unless ``--no-prefetcher``) ends each sample's transform with ``MaybePILToTensor``
(uint8 ``[C, H, W]``, 0..255) and converts and normalizes whole batches where the model runs. Against
``ToTensor`` + ``Normalize`` per sample in the workers, a quarter of the bytes cross the worker queues
(and go to a GPU), and one batched op replaces a few small ops per image. Normalization draws nothing
at random, so the per-sample seeded augmentation and the exact mid-epoch resume are unchanged.

The workers keep per-sample float transforms where a later per-sample step needs a float image:
``--no-prefetcher`` (timm's meaning), random erasing (``--reprob``, drawn per sample here), ``--aug-splits``
(AugMix), ``--relabel-maps`` (the box-recording transform), ``--train-img-sizes`` / ``--naflex-loader``
(their own transforms) and, for evaluation, ``--tta`` views. :class:`BatchNormalize` passes float batches
through unchanged, so a consumer never needs to know which path a batch took.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ['uint8_train_images', 'uint8_eval_images', 'BatchNormalize']


def uint8_train_images(args: Any) -> bool:
    """Whether the training workers hand out uint8 images (timm's prefetcher path) for these flags."""
    return not (getattr(args, 'no_prefetcher', False) or (getattr(args, 'reprob', 0.0) or 0.0) > 0
                or (getattr(args, 'aug_splits', 0) or 0) > 1 or getattr(args, 'relabel_maps', None)
                or getattr(args, 'naflex_loader', False) or getattr(args, 'train_img_sizes', None))


def uint8_eval_images(args: Any) -> bool:
    """Whether the evaluation workers hand out uint8 images for these flags."""
    return not (getattr(args, 'no_prefetcher', False) or (getattr(args, 'tta', 0) or 0) > 1
                or getattr(args, 'naflex_loader', False))


class BatchNormalize:
    """A uint8 batch ``[B, C, H, W]`` (0..255) becomes float32 ``(x / 255 - mean) / std`` on its own
    device, as timm's prefetcher computes it; any other batch (float images, NaFlex's dict of patches)
    is returned as it is."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor([m * 255 for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor([s * 255 for s in std], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            return images  # float images, NaFlex patch dicts
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return images.float().sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f'BatchNormalize(mean={(self.mean.flatten() / 255).tolist()}, std={(self.std.flatten() / 255).tolist()})'
