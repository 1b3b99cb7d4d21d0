"""``timm-multilabel show``: an image with the heat maps of its top label-map classes (ReLabel Fig. A2).

    timm-multilabel show --maps relabel-maps --image train/n01440764/n01440764_10026.JPEG --out map.png

What is drawn is described in :mod:`timm_multilabel.relabel.show`.
"""
from __future__ import annotations

import argparse

from ..relabel.show import show_label_map


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--maps', required=True, help='label-map dataset folder or Hub dataset id')
    parser.add_argument('--image', required=True, metavar='FILE', help='the image')
    parser.add_argument('--out', required=True, metavar='PNG', help='PNG file to write')
    parser.add_argument('--image-id', default=None,
                        help="the image's id in the maps (default: found from the image's path)")
    parser.add_argument('--topk', type=int, default=2, metavar='K', help='classes to draw (default 2)')


def run(args: argparse.Namespace) -> int:
    rows = show_label_map(args.maps, args.image, args.out, image_id=args.image_id, topk=args.topk)
    for c, name, p, _ in rows:
        print(f'{p:6.3f}  {c:5d}  {name}')
    print(f'wrote {args.out}')
    return 0
