"""``timm-multilabel export`` (checkpoint -> Hugging Face model folder) and ``push-maps`` (label maps -> Hub).

    timm-multilabel export output/run1 output/run1-hf                  # model_best.pth.tar + summary.json
    timm-multilabel export timm-run/model_best.pth.tar out --use-ema   # timm train.py checkpoint, EMA weights
    timm-multilabel export weights.pth out --model resnet50 --num-classes 10 --push-to-hub me/resnet50-mile
    timm-multilabel push-maps maps/ me/imagenet-relabel-maps [--private]
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path
from typing import List, Optional

from .errors import UserError

_logger = logging.getLogger(__name__)

_RUN_CHECKPOINTS = ('model_best.pth.tar', 'last.pth.tar')


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='checkpoint file (train.py or timm train.py; .pth/.pth.tar/.bin/.safetensors), '
                             'or a train.py --output folder (its model_best.pth.tar, else last.pth.tar)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='model folder to write')
    parser.add_argument('--model', default=None, metavar='NAME',
                        help="timm architecture (default: the checkpoint's 'arch'); needed for a bare state dict")
    parser.add_argument('--num-classes', type=int, default=None, metavar='N',
                        help='default: from the checkpoint args, else its classifier weight')
    parser.add_argument('--use-ema', action='store_true', help='export the EMA weights (state_dict_ema)')
    parser.add_argument('--metrics', default=None, metavar='FILE',
                        help="JSON with the card's metrics: train.py's summary.json or a flat dict "
                             "(default: summary.json beside a run folder's checkpoint, else the checkpoint's metric)")
    parser.add_argument('--dataset', default=None, metavar='NAME',
                        help="training data shown in the card (default: the checkpoint's --dataset)")
    parser.add_argument('--label-names', default=None, metavar='FILE',
                        help='class names: a JSON list, or a text file with one name per line')
    parser.add_argument('--license', default='apache-2.0', help='license id in the model card (default apache-2.0)')
    parser.add_argument('--push-to-hub', default=None, metavar='REPO_ID', help='upload the folder to this model repo')
    parser.add_argument('--hub-private', action='store_true', help='create the Hub repo as private')


def _read_label_names(path: Optional[str]) -> Optional[List[str]]:
    if path is None:
        return None
    p = Path(path)
    try:
        text = p.read_text(encoding='utf-8')
    except OSError as e:
        raise UserError(f'--label-names {path}: cannot read ({e.strerror or e})') from None
    if p.suffix == '.json':
        try:
            names = json.loads(text)
        except ValueError as e:
            raise UserError(f'--label-names {path}: not valid JSON ({e})') from None
        if not isinstance(names, list):
            raise UserError(f'--label-names {path}: expected a JSON list of names')
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _resolve_checkpoint(path: str, metrics: Optional[str]):
    p = Path(path)
    if p.is_dir():
        found = next((p / n for n in _RUN_CHECKPOINTS if (p / n).is_file()), None)
        if found is None:
            raise UserError(f'{path}: folder holds no {" or ".join(_RUN_CHECKPOINTS)}')
        if metrics is None and (p / 'summary.json').is_file() and found.name == 'model_best.pth.tar':
            metrics = str(p / 'summary.json')
        return found, metrics
    if not p.exists():
        raise UserError(f'checkpoint {path}: no such file or folder')
    return p, metrics


def run_export(args: argparse.Namespace) -> int:
    from .hub import export_checkpoint, push_model_folder

    checkpoint, metrics = _resolve_checkpoint(args.checkpoint, args.metrics)
    label_names = _read_label_names(args.label_names)
    out = export_checkpoint(
        checkpoint, args.out_dir, model_name=args.model, num_classes=args.num_classes, use_ema=args.use_ema,
        label_names=label_names, dataset=args.dataset, metrics=metrics, repo_id=args.push_to_hub,
        license=args.license)
    print(f'model folder: {out}')
    if args.push_to_hub:
        url = push_model_folder(out, args.push_to_hub, private=args.hub_private)
        print(f'pushed: {url}')
    return 0


def add_push_maps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('folder', metavar='DIR', help='label-map dataset folder (from annotate or import-relabel)')
    parser.add_argument('repo_id', metavar='REPO_ID', help='Hugging Face dataset repo, e.g. me/imagenet-relabel-maps')
    parser.add_argument('--private', action='store_true', help='create the dataset repo as private')


def _push_maps_fn():
    for module_name in ('timm_multilabel.relabel.writer', 'timm_multilabel.relabel.store'):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue
            raise
        fn = getattr(module, 'push_maps', None)
        if fn is not None:
            return fn
    raise UserError('push-maps is not available in this version (no timm_multilabel.relabel push_maps)')


def run_push_maps(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f'push-maps: {args.folder} is not a folder')
    push_maps = _push_maps_fn()
    url = push_maps(str(folder), args.repo_id, private=args.private)
    print(f'pushed: {url}' if url else f'pushed {folder} to {args.repo_id}')
    return 0
