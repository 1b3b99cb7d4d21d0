"""Evaluate any timm model: load it from a name, folder, Hub id or checkpoint, build its eval data
with its own preprocessing, and predict over a loader (one process, or every rank with a gather).

MODEL specs for :func:`load_model`: a timm name (``pretrained`` loads its weights), ``local-dir:PATH``
(or a plain folder), ``hf-hub:ORG/NAME``, or a checkpoint file (``arch`` when it does not name its
architecture). Preprocessing is the model's own (timm's ``resolve_data_config`` + ``create_transform``).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import timm.data
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .data import create_dataset, get_real_labels
from .data.dataset_factory import DIGITS_GRID_NAMES
from .data.real_labels import load_real_labels, real_labels_for_files
from .errors import UserError
from .hub import model_from_checkpoint, read_multilabel_config
from .method import describe_method

__all__ = ['IndexedDataset', 'load_model', 'build_eval_data', 'predict']

# training arguments of a checkpoint that resolve_data_config reads
_DATA_ARGS = ('input_size', 'img_size', 'in_chans', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode')


class IndexedDataset(Dataset):
    """Wraps a dataset so each sample also carries its index: ``(image, label, index)``.

    The index lets the main process look up per-sample facts (ReaL label sets) after
    ``gather_for_metrics`` has reassembled the predictions of all ranks.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, torch.as_tensor(label if label is not None else -1), index


def load_model(
        spec: str,
        pretrained: bool = False,
        arch: Optional[str] = None,
        num_classes: Optional[int] = None,
        use_ema: bool = False,
) -> Tuple[nn.Module, Optional[str], Dict[str, Any]]:
    """The model named by ``spec`` (see module docstring) in eval mode, the probability kind its folder
    or checkpoint records (``'sigmoid'`` / ``'softmax'``, None if unknown), and the preprocessing
    arguments a checkpoint was trained with (``input_size``, ``mean``, ... for ``resolve_data_config``;
    empty for folders and names, whose config carries them)."""
    path = Path(spec)
    if ':' not in spec or len(spec.partition(':')[0]) < 2:  # no source prefix (a Windows drive is not one)
        if path.is_file():
            model, ckpt = model_from_checkpoint(path, arch, num_classes, use_ema)
            args = ckpt.get('args') or {}
            parts = describe_method(args)['name'].split('+')
            probs = 'sigmoid' if 'mile' in parts or args.get('bce_loss') else ('softmax' if args else None)
            return model, probs, {k: args[k] for k in _DATA_ARGS if args.get(k) is not None}
        if path.is_dir():
            spec = f'local-dir:{spec}'
    source = spec.partition(':')[0].lower() if ':' in spec else ''
    if source in ('local-dir', 'hf-hub', 'hf_hub'):
        pretrained = True
    try:
        model = timm.create_model(spec, pretrained=pretrained, num_classes=num_classes)
    except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'model {spec}: {msg}') from None
    config = read_multilabel_config(spec) or {}
    return model.eval(), config.get('probs'), {}


def _filenames(dataset: Any, indices: Sequence[int]) -> List[str]:
    try:
        return [str(dataset.filename(i)) for i in indices]
    except (AttributeError, NotImplementedError, TypeError):
        raise UserError('--real-labels: this dataset does not expose file names to match ReaL labels') from None


def build_eval_data(
        model: nn.Module,
        dataset: str = '',
        data_dir: Optional[str] = None,
        split: str = 'validation',
        seed: int = 42,
        num_samples: Optional[int] = None,
        img_size: Optional[int] = None,
        crop_pct: Optional[float] = None,
        real_labels: Optional[str] = None,
        data_args: Optional[Dict[str, Any]] = None,
) -> Tuple[Dataset, Optional[List[List[int]]], Dict[str, Any]]:
    """``(dataset, real_labels or None, data_config)`` with the model's preprocessing.

    Args:
        model: the model whose pretrained config gives the preprocessing.
        dataset: ``'digits-grid'`` or a timm dataset name read from ``data_dir`` ('' = image folder).
        num_samples: the first N images (digits-grid: N generated grids).
        img_size, crop_pct: overrides of the model's (and ``data_args``') preprocessing.
        real_labels: a ReaL labels JSON file (``'timm'``: timm's bundled ImageNet one), matched to the
            images by file name; default: the dataset's own ReaL labels, if any.
        data_args: a checkpoint's training arguments (``input_size``, ``mean``, ...).
    """
    overrides: Dict[str, Any] = dict(data_args or {})
    if img_size is not None:
        overrides.pop('input_size', None)
        overrides['img_size'] = img_size
    if crop_pct is not None:
        overrides['crop_pct'] = crop_pct
    try:
        data_config = timm.data.resolve_data_config(overrides, model=model)
    except AssertionError:
        raise UserError(f'unusable input size / mean / std in {sorted(overrides)}') from None
    transform = timm.data.create_transform(**data_config, is_training=False)
    digits = dataset.lower() in DIGITS_GRID_NAMES
    ds = create_dataset(
        dataset, root=data_dir, split=split, is_training=False, seed=seed, transform=transform,
        num_samples=num_samples if digits else None)
    indices = list(range(len(ds)))
    if num_samples is not None and not digits and num_samples < len(ds):
        indices = indices[:num_samples]
    labels = get_real_labels(ds)
    if real_labels:
        table = load_real_labels(None if real_labels == 'timm' else real_labels)
        labels = real_labels_for_files(_filenames(ds, indices), table)
    elif labels is not None:
        labels = [labels[i] for i in indices]
    if len(indices) < len(ds):
        ds = Subset(ds, indices)
    return ds, labels, data_config


def _no_gather(tensors: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
    return tensors


@torch.no_grad()
def predict(
        model: nn.Module,
        loader,
        gather: Callable[[Tuple[torch.Tensor, ...]], Tuple[torch.Tensor, ...]] = _no_gather,
        device: Optional[torch.device] = None,
        autocast: Callable[[], Any] = nullcontext,
        channels_last: bool = False,
        progress: Optional[Callable] = None,
        normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """Run ``model`` over ``loader`` of ``(image, label, index)`` batches (:class:`IndexedDataset`).

    Args:
        gather: combines ``(logits, labels, indices)`` of all processes, e.g. Accelerate's
            ``gather_for_metrics`` (each test sample exactly once); default: this process only.
        device: where the images go (None: they are there already, as from a prepared loader).
        autocast: context manager the forward pass runs in.
        progress: wraps the loader (e.g. a progress bar).
        normalize: applied to each image batch on its device (e.g. uint8 batches to normalized float).

    Returns:
        ``logits`` [N, C] float32, ``labels`` [N] and ``indices`` [N], on the CPU.
    """
    model.eval()
    logits, labels, indices = [], [], []
    iterator = progress(loader) if progress is not None else loader
    for images, target, index in iterator:
        if device is not None:
            images = images.to(device)
        if normalize is not None:
            images = normalize(images)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out, target, index = gather((out.float(), target, index))
        logits.append(out.cpu())
        labels.append(target.cpu())
        indices.append(index.cpu())
    return {
        'logits': torch.cat(logits) if logits else torch.empty(0),
        'labels': torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        'indices': torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
    }
