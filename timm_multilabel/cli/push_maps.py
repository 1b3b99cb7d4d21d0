"""``timm-multilabel push-maps``: upload a label-map dataset folder to the Hugging Face Hub.

    timm-multilabel push-maps maps/ me/imagenet-relabel-maps [--private]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..relabel.writer import push_maps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('folder', metavar='DIR', help='label-map dataset folder (from annotate or import-relabel)')
    parser.add_argument('repo_id', metavar='REPO_ID', help='Hugging Face dataset repo, e.g. me/imagenet-relabel-maps')
    parser.add_argument('--private', action='store_true', help='create the dataset repo as private')


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f'push-maps: {args.folder} is not a folder')
    url = push_maps(str(folder), args.repo_id, private=args.private)
    print(f'pushed: {url}' if url else f'pushed {folder} to {args.repo_id}')
    return 0
