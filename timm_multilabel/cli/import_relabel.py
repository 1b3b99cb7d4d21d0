"""``timm-multilabel import-relabel``: the official ReLabel maps -> a label-map dataset.

    timm-multilabel import-relabel --src relabel_imagenet/ --output relabel-imagenet-maps --dtype float16

Every file is checked before anything is written; see :mod:`timm_multilabel.relabel.official`.
"""
from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..relabel.maps import MAP_DTYPES
from ..relabel.official import OFFICIAL_ANNOTATOR, OFFICIAL_WEIGHTS, import_official_maps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--src', required=True, metavar='DIR', help='folder of official maps: <wnid>/<name>.pt')
    parser.add_argument('--output', required=True, metavar='DIR', help='label-map dataset folder to write')
    parser.add_argument('--dtype', choices=MAP_DTYPES, default='float16', help='score storage (default float16)')
    parser.add_argument('--num-classes', type=int, default=1000, help='classes of the annotator (default 1000)')
    parser.add_argument('--class-names', metavar='FILE', default=None,
                        help='one class name per line (default: ImageNet-1k names when --num-classes 1000)')
    parser.add_argument('--annotator', default=OFFICIAL_ANNOTATOR, help='annotator recorded in the card')
    parser.add_argument('--weights', default=OFFICIAL_WEIGHTS, help='annotator weights recorded in the card')
    parser.add_argument('--input-size', type=int, default=475, help="annotator input size recorded in the card")
    parser.add_argument('--license', default=None, help='license recorded in the dataset card')
    parser.add_argument('--shard-size', type=int, default=10000, metavar='N', help='maps per Parquet shard')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), metavar='N',
                        help='worker processes reading the .pt files')
    parser.add_argument('--overwrite', action='store_true', help='replace the label maps already in --output')
    parser.add_argument('--push-to-hub', metavar='REPO_ID', default=None, help='upload the folder as a Hub dataset repo')
    parser.add_argument('--private', action='store_true', help='create the Hub repo private')


def run(args: argparse.Namespace) -> int:
    if args.shard_size < 1 or args.num_classes < 1 or args.workers < 0:
        raise UserError('--shard-size and --num-classes must be >= 1, --workers >= 0')
    import_official_maps(
        args.src, args.output, dtype=args.dtype, num_classes=args.num_classes, class_names_file=args.class_names,
        annotator=args.annotator, weights=args.weights, input_size=args.input_size, license=args.license,
        shard_size=args.shard_size, workers=args.workers, overwrite=args.overwrite, push_to_hub=args.push_to_hub,
        private=args.private)
    return 0
