"""``timm-multilabel eval``: top-1 and ReaL metrics of any timm model.

    timm-multilabel eval hf-hub:me/resnet50-mile --data-dir /data/imagenet --real-labels timm
    timm-multilabel eval local-dir:output/run1 --dataset digits-grid
    timm-multilabel eval output/run1/model_best.pth.tar --dataset digits-grid --json eval.json
    timm-multilabel eval resnet50 --pretrained --data-dir /data/imagenet/val --real-labels real.json

MODEL is a timm name (``--pretrained`` loads its weights), ``local-dir:PATH`` (or a plain folder),
``hf-hub:ORG/NAME``, or a checkpoint file (``--model NAME`` when it does not name its architecture).
Preprocessing is the model's own (timm's ``resolve_data_config`` + ``create_transform``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import UserError

_logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', metavar='MODEL',
                        help='timm name, local-dir:PATH (or a folder), hf-hub:ORG/NAME, or a checkpoint file')
    g = parser.add_argument_group('model')
    g.add_argument('--pretrained', action='store_true',
                   help='load the pretrained weights of a timm name (always on for local-dir: / hf-hub:)')
    g.add_argument('--model-name', '--arch', dest='arch', default=None, metavar='NAME',
                   help='architecture of a checkpoint that does not name it')
    g.add_argument('--num-classes', type=int, default=None, metavar='N', help='classifier size of a timm name')
    g.add_argument('--use-ema', action='store_true', help='evaluate the EMA weights of a checkpoint')
    g.add_argument('--img-size', type=int, default=None, metavar='N', help='input size (default: the model\'s)')
    g.add_argument('--crop-pct', type=float, default=None, help='center-crop fraction (default: the model\'s)')
    probs = g.add_mutually_exclusive_group()
    probs.add_argument('--sigmoid', dest='probs', action='store_const', const='sigmoid',
                       help='read outputs with a sigmoid (BCE / MILe models); default: what the model folder '
                            'or checkpoint records, else softmax')
    probs.add_argument('--softmax', dest='probs', action='store_const', const='softmax', help='force softmax')
    d = parser.add_argument_group('data')
    d.add_argument('--dataset', default=None, metavar='NAME',
                   help="'digits-grid', or a timm dataset name used with --data-dir (default: image folder)")
    d.add_argument('--data-dir', default=None, metavar='DIR', help='image folder (e.g. ImageNet val)')
    d.add_argument('--split', default='validation', help='split (default validation; digits-grid: test)')
    d.add_argument('--real-labels', default=None, metavar='FILE',
                   help="ReaL labels JSON ('timm' = timm's bundled ImageNet file); matched to images by their "
                        "ILSVRC2012_val_XXXXXXXX file names")
    d.add_argument('--num-samples', type=int, default=None, metavar='N',
                   help='evaluate the first N images (digits-grid: generate N grids)')
    d.add_argument('--seed', type=int, default=42,
                   help="digits-grid generation seed (default 42, train.py's default: the same test grids)")
    d.add_argument('-b', '--batch-size', type=int, default=64, metavar='N')
    d.add_argument('-j', '--workers', type=int, default=2, metavar='N')
    parser.add_argument('--device', default=None, help='default: cuda when available, else cpu')
    parser.add_argument('--json', default=None, metavar='FILE', help='also write the results as JSON')


def _check_args(args: argparse.Namespace) -> None:
    if args.dataset is None and args.data_dir is None:
        raise UserError('give --dataset digits-grid, or --data-dir DIR (with --real-labels FILE for ReaL metrics)')
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UserError(f'--data-dir {args.data_dir}: no such directory')
    if args.real_labels not in (None, 'timm') and not os.path.isfile(args.real_labels):
        raise UserError(f'--real-labels {args.real_labels}: file not found')
    for name in ('batch_size', 'num_samples', 'img_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.workers < 0:
        raise UserError(f'--workers must be >= 0, got {args.workers}')
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f'--crop-pct must be in (0, 1], got {args.crop_pct}')


_DATA_ARGS = ('input_size', 'img_size', 'in_chans', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode')


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
    import timm

    from .hub import method_from_args, model_from_checkpoint, read_multilabel_config

    path = Path(spec)
    if ':' not in spec or len(spec.partition(':')[0]) < 2:  # no source prefix (a Windows drive is not one)
        if path.is_file():
            model, ckpt = model_from_checkpoint(path, arch, num_classes, use_ema)
            args = ckpt.get('args') or {}
            parts = method_from_args(args)['name'].split('+')
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


def build_eval_data(args: argparse.Namespace, model: nn.Module, data_args: Optional[Dict[str, Any]] = None):
    """(dataset, real_labels or None, data_config) for ``args`` with the model's preprocessing
    (``data_args``: a checkpoint's training arguments, under ``--img-size`` / ``--crop-pct``)."""
    import timm.data

    from .data import create_dataset, get_real_labels
    from .data.dataset_factory import DIGITS_GRID_NAMES

    overrides: Dict[str, Any] = dict(data_args or {})
    if args.img_size is not None:
        overrides.pop('input_size', None)
    if args.img_size is not None:
        overrides['img_size'] = args.img_size
    if args.crop_pct is not None:
        overrides['crop_pct'] = args.crop_pct
    try:
        data_config = timm.data.resolve_data_config(overrides, model=model)
    except AssertionError:
        raise UserError(f'unusable input size / mean / std in {sorted(overrides)}') from None
    transform = timm.data.create_transform(**data_config, is_training=False)
    name = args.dataset or ''
    digits = name.lower() in DIGITS_GRID_NAMES
    dataset = create_dataset(
        name, root=args.data_dir, split=args.split, is_training=False, seed=args.seed, transform=transform,
        num_samples=args.num_samples if digits else None)
    indices = list(range(len(dataset)))
    if args.num_samples is not None and not digits and args.num_samples < len(dataset):
        indices = indices[:args.num_samples]
    real_labels = get_real_labels(dataset)
    if args.real_labels:
        from .data.real_labels import load_real_labels, real_labels_for_files
        table = load_real_labels(None if args.real_labels == 'timm' else args.real_labels)
        real_labels = real_labels_for_files(_filenames(dataset, indices), table)
    elif real_labels is not None:
        real_labels = [real_labels[i] for i in indices]
    if len(indices) < len(dataset):
        dataset = torch.utils.data.Subset(dataset, indices)
    return dataset, real_labels, data_config


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """All logits ``[N, C]`` (float32, CPU) and integer labels ``[N]`` of a loader of ``(image, label)``."""
    logits, labels = [], []
    for images, targets in loader:
        out = model(images.to(device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(targets).long().cpu())
    return torch.cat(logits), torch.cat(labels)


def _write_json(path: str, data: Dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        tmp.write_text(json.dumps(data, indent=2) + '\n', encoding='utf-8')
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run(args: argparse.Namespace) -> int:
    from .hub import METRIC_KEYS, METRIC_NAMES
    from .metrics import compute_multilabel_metrics

    _check_args(args)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model, recorded, data_args = load_model(args.model, args.pretrained, args.arch, args.num_classes, args.use_ema)
    model.to(device)
    probs_kind = args.probs or recorded or 'softmax'
    dataset, real_labels, data_config = build_eval_data(args, model, data_args)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
        pin_memory=device.type == 'cuda')
    logits, labels = predict(model, loader, device)
    num_classes = logits.shape[1]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise UserError(f'the data has class ids up to {int(labels.max())} but {args.model} has {num_classes} '
                        f'outputs (wrong --num-classes or data set?)')
    metrics = compute_multilabel_metrics(logits, labels, real_labels, probs_kind)

    width = max(len(METRIC_NAMES.get(k, k)) for k in METRIC_KEYS)
    print(f'{args.model}: {len(labels)} images, {probs_kind} probabilities, input {tuple(data_config["input_size"])}')
    for key in METRIC_KEYS:
        value = metrics.get(key)
        shown = '-' if value is None else f'{value:.2f}'
        print(f'  {METRIC_NAMES.get(key, key):<{width}}  {shown}')
    if args.json:
        _write_json(args.json, {
            'model': args.model, 'metrics': {k: metrics.get(k) for k in METRIC_KEYS}, 'probs': probs_kind,
            'eval_samples': len(labels), 'dataset': args.dataset or args.data_dir, 'split': args.split,
            'data_config': {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        })
    return 0
