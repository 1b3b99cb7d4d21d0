"""``timm-multilabel eval``: top-1 and ReaL metrics of any timm model.

    timm-multilabel eval hf-hub:me/resnet50-mile --data-dir /data/imagenet --real-labels timm
    timm-multilabel eval local-dir:output/run1 --dataset digits-grid
    timm-multilabel eval output/run1/model_best.pth.tar --dataset digits-grid --json eval.json
    timm-multilabel eval resnet50 --pretrained --data-dir /data/imagenet/val --real-labels real.json

MODEL is a timm name (``--pretrained`` loads its weights), ``local-dir:PATH`` (or a plain folder),
``hf-hub:ORG/NAME``, or a checkpoint file (``--model NAME`` when it does not name its architecture).
Preprocessing is the model's own (timm's ``resolve_data_config`` + ``create_transform``); see
:mod:`timm_multilabel.evaluation`.
"""
from __future__ import annotations

import argparse
import os

import torch
from torch.utils.data import DataLoader

from ..errors import UserError
from ..evaluation import IndexedDataset, build_eval_data, load_model, predict
from ..fileio import write_json
from ..metrics import METRIC_KEYS, METRIC_NAMES, compute_multilabel_metrics


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


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model, recorded, data_args = load_model(args.model, args.pretrained, args.arch, args.num_classes, args.use_ema)
    model.to(device)
    probs_kind = args.probs or recorded or 'softmax'
    dataset, real_labels, data_config = build_eval_data(
        model, args.dataset or '', args.data_dir, args.split, seed=args.seed, num_samples=args.num_samples,
        img_size=args.img_size, crop_pct=args.crop_pct, real_labels=args.real_labels, data_args=data_args)
    loader = DataLoader(
        IndexedDataset(dataset), batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
        pin_memory=device.type == 'cuda')
    out = predict(model, loader, device=device)
    logits, labels = out['logits'], out['labels']
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
        write_json(args.json, {
            'model': args.model, 'metrics': {k: metrics.get(k) for k in METRIC_KEYS}, 'probs': probs_kind,
            'eval_samples': len(labels), 'dataset': args.dataset or args.data_dir, 'split': args.split,
            'data_config': {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        })
    return 0
