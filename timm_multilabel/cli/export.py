"""``timm-multilabel export``: a training checkpoint -> a Hugging Face model folder (optionally pushed).

    timm-multilabel export output/run1 output/run1-hf                  # model_best.pth.tar + summary.json
    timm-multilabel export timm-run/model_best.pth.tar out --use-ema   # timm train.py checkpoint, EMA weights
    timm-multilabel export weights.pth out --model resnet50 --num-classes 10 --push-to-hub me/resnet50-mile
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional, Tuple

from ..checkpoint_files import BEST, EXPORT_PREFER, resolve_checkpoint_path
from ..errors import UserError
from ..hub import export_checkpoint, push_model_folder

SUMMARY = 'summary.json'  # what train.py writes beside model_best.pth.tar: the card's metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='checkpoint file (train.py or timm train.py; .pth/.pth.tar/.bin/.safetensors), '
                             'or a train.py --output folder (its model_best.pth.tar, else last.pth.tar, '
                             'else its newest checkpoint-N.pth.tar)')
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
                        help="class names: a JSON list, or a text file with one name per line (default: the "
                             "label_names of the config.json train.py wrote beside the checkpoint, else those "
                             "train.py stored in the checkpoint, else the checkpoint's --class-map file)")
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


def _resolve_checkpoint(path: str, metrics: Optional[str]) -> Tuple[Path, Optional[str]]:
    """The checkpoint file of ``path`` and the metrics file for its card: ``--metrics``, else the run
    folder's summary.json when the checkpoint is the folder's model_best.pth.tar."""
    found = resolve_checkpoint_path(path, EXPORT_PREFER, 'checkpoint')
    folder = Path(path)
    if folder.is_dir() and metrics is None and found.name == BEST and (folder / SUMMARY).is_file():
        metrics = str(folder / SUMMARY)
    return found, metrics


def run(args: argparse.Namespace) -> int:
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
