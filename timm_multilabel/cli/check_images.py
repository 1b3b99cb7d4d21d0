"""``timm-multilabel check-images``: decode every image of a folder before a long run does.

    timm-multilabel check-images data/train --workers 8 --json bad_images.json

Exit status: 0 when every image decodes, 1 when some do not (each listed with its reason), 2 on a
user error (no such folder, no images in it).
"""
from __future__ import annotations

import argparse

from ..data.image_check import check_images
from ..errors import UserError
from ..fileio import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('folder', metavar='DIR', help='image folder (listed recursively, each symlinked folder once)')
    parser.add_argument('--workers', type=int, default=None, metavar='N',
                        help='decoding processes (default: the CPU count, at most 8; 0: this process)')
    parser.add_argument('--json', default=None, metavar='FILE', help='also write the report as JSON')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise UserError(f'--workers {args.workers}: must be >= 0')
    report = check_images(args.folder, workers=args.workers, progress=not args.no_progress)
    if not report.images:
        raise UserError(f'no images found under {args.folder}')
    for _, message in report.bad:
        print(f'bad: {message}')
    print(f'checked {report.images} images under {args.folder}: {report.ok} ok, {len(report.bad)} bad')
    if args.json:
        write_json(args.json, report.to_dict())
        print(f'wrote {args.json}')
    return 1 if report.bad else 0
