"""``timm-multilabel annotate``: write top-K label maps for a folder of images, or a Hugging Face
image dataset, with any timm model.

    timm-multilabel annotate --model tf_efficientnet_l2.ns_jft_in1k_475 --pretrained \\
        --data-dir /data/imagenet/train --output relabel-l2 --topk 5 --dtype float16
    timm-multilabel annotate --model ... --dataset hfds/ORG/NAME --split train --output maps

Resumable (``--resume``) and shared out to the processes of ``accelerate launch``; see
:mod:`timm_multilabel.relabel.annotate_run`.
"""
from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..relabel.annotate import create_annotator
from ..relabel.annotate_run import annotate_dataset, default_class_names, list_images_to_annotate, weights_label
from ..relabel.maps import MAP_DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('annotator')
    g.add_argument('--model', required=True, help='timm model name (the machine annotator)')
    w = g.add_mutually_exclusive_group()
    w.add_argument('--pretrained', action='store_true', help="load timm's pretrained weights")
    w.add_argument('--pretrained-path', metavar='FILE', default=None,
                   help='local weights: .safetensors or .pt/.pth state dict (read with weights_only=True)')
    g.add_argument('--img-size', type=int, default=None, metavar='N',
                   help="square input size; the whole image is resized to N x N (default: the model's)")
    g.add_argument('--topk', type=int, default=5, metavar='K', help='classes kept per map cell (default 5)')
    g.add_argument('--dtype', choices=MAP_DTYPES, default='float16', help='score storage (default float16)')
    g.add_argument('--class-names', metavar='FILE', default=None,
                   help='text file, one class name per line (default: ImageNet names for ImageNet heads)')
    d = parser.add_argument_group('data and output')
    d.add_argument('--data-dir', default=None, metavar='DIR',
                   help='folder of images, any layout, searched recursively; with --dataset, as train.py\'s '
                        '--data-dir (the datasets cache folder for hfds/NAME)')
    d.add_argument('--dataset', default='', metavar='NAME',
                   help="'' (default): the images under --data-dir; else a dataset as train.py's --dataset, "
                        "e.g. hfds/NAME for a Hugging Face image dataset (Hub id or local folder), keyed by "
                        "the same image ids train.py uses (its image_id column, else id, else the row)")
    d.add_argument('--split', default='train', metavar='NAME', help='split of --dataset (default train)')
    d.add_argument('--output', required=True, metavar='DIR', help='label-map dataset folder to write')
    d.add_argument('--limit', type=int, default=None, metavar='N', help='annotate only the first N images (by id)')
    d.add_argument('--shard-size', type=int, default=10000, metavar='N', help='maps per Parquet shard (default 10000)')
    d.add_argument('--resume', action='store_true', help='continue an interrupted run in --output')
    d.add_argument('--overwrite', action='store_true', help='replace the label maps already in --output')
    d.add_argument('--license', default=None, help='license recorded in the dataset card')
    d.add_argument('--push-to-hub', metavar='REPO_ID', default=None, help='upload the folder as a Hub dataset repo')
    d.add_argument('--private', action='store_true', help='create the Hub repo private')
    p = parser.add_argument_group('speed')
    p.add_argument('--batch-size', type=int, default=64, metavar='N', help='images per forward pass (default 64)')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), metavar='N',
                   help='DataLoader worker processes decoding images')


def _check_args(args: argparse.Namespace) -> None:
    for name in ('topk', 'batch_size', 'shard_size'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1')
    if args.workers < 0:
        raise UserError('--workers must be >= 0')
    if args.limit is not None and args.limit < 1:
        raise UserError('--limit must be >= 1')
    if not args.data_dir and not args.dataset:
        raise UserError('give --data-dir (a folder of images) or --dataset (e.g. hfds/NAME)')
    if args.resume and args.overwrite:
        raise UserError('give either --resume or --overwrite, not both')
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f'--output {args.output} is a file, not a folder')


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    annotator = create_annotator(args.model, pretrained=args.pretrained, pretrained_path=args.pretrained_path,
                                 topk=args.topk, img_size=args.img_size)
    image_ids, images = list_images_to_annotate(args.data_dir, args.dataset, args.split, args.limit)
    class_names = default_class_names(args.class_names, annotator.model, annotator.num_classes)
    source = {
        'data_dir': os.path.abspath(args.data_dir) if args.data_dir else None,
        'dataset': args.dataset or None,
        'split': args.split if args.dataset else None,
    }
    annotate_dataset(
        annotator, image_ids, images, args.output, model_name=args.model,
        weights=weights_label(annotator.model, args.pretrained, args.pretrained_path), dtype=args.dtype,
        shard_size=args.shard_size, resume=args.resume, overwrite=args.overwrite, class_names=class_names,
        license=args.license, push_to_hub=args.push_to_hub, private=args.private, batch_size=args.batch_size,
        workers=args.workers, source=source)
    return 0
