"""A dataset wrapper that gives each training sample its image id, crop box and flip.

    ds = BoxedDataset(timm.data.create_dataset('', root, split='train'),  # transform=None: PIL images
                      create_box_transform(input_size=224, auto_augment='rand-m9-mstd0.5'))
    ds[i] -> (Tensor[3, h, w], {'label': int, 'image_id': str, 'box': Tensor[4], 'flipped': bool})

The sample dict is what ``LabelPoolingCollate`` consumes.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import Tensor
from torch.utils.data import Dataset

from timm_multilabel.errors import UserError

__all__ = ['BoxedDataset', 'image_ids_for']


def _strip(rel: str) -> str:
    return os.path.splitext(rel)[0].replace(os.sep, '/')


def image_ids_for(dataset: Any) -> List[str]:
    """Image ids of a dataset as label maps name them: the file path relative to the dataset
    root, without extension, '/'-separated (``n01440764/n01440764_10026``).

    Knows timm's ``ImageDataset`` (``filenames()``) and torchvision's ``ImageFolder`` /
    ``DatasetFolder`` (``samples`` + ``root``); other datasets must pass ``image_ids``.
    """
    if hasattr(dataset, 'filenames') and callable(dataset.filenames):
        try:
            return [_strip(f) for f in dataset.filenames(basename=False, absolute=False)]
        except (NotImplementedError, TypeError):
            pass
    if hasattr(dataset, 'samples') and hasattr(dataset, 'root'):
        return [_strip(os.path.relpath(path, dataset.root)) for path, _ in dataset.samples]
    raise UserError(f"cannot derive image ids of a {type(dataset).__name__}; pass image_ids= "
                    f"(paths relative to the dataset root, without extension)")


class BoxedDataset(Dataset):
    """Wraps a dataset of ``(PIL image, int label)`` (its own ``transform`` must be None).

    Args:
        dataset: map-style dataset returning ``(img, label)``.
        transform: ``img -> (Tensor, box Tensor[4], flipped bool)``, e.g. ``create_box_transform(...)``.
        image_ids: one id per sample, as in the label maps; derived with :func:`image_ids_for`
            when None.

    Returns per item:
        ``(Tensor[3, h, w], {'label': int, 'image_id': str, 'box': Tensor[4], 'flipped': bool})``, or
        None where the wrapped dataset returned None (a skipped bad image; see ``data.bad_images``).
    """

    def __init__(self, dataset: Any, transform: Callable, image_ids: Optional[Sequence[str]] = None):
        if getattr(dataset, 'transform', None) is not None:
            raise UserError(f"BoxedDataset: the wrapped {type(dataset).__name__} has a transform "
                            f"({type(dataset.transform).__name__}); set it to None, the box transform replaces it")
        ids = list(image_ids) if image_ids is not None else image_ids_for(dataset)
        if len(ids) != len(dataset):
            raise UserError(f"BoxedDataset: {len(ids)} image ids for {len(dataset)} samples")
        self.dataset = dataset
        self.transform = transform
        self.image_ids = ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Optional[Tuple[Tensor, Dict[str, Any]]]:
        item = self.dataset[index]
        if item is None:  # a bad image skipped by the dataset (skip_bad_images): drop_missing drops it
            return None
        img, label = item
        img, box, flipped = self.transform(img)
        return img, {'label': int(label), 'image_id': self.image_ids[index], 'box': box, 'flipped': bool(flipped)}
