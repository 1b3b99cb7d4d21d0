"""``timm-multilabel`` command line: one subcommand per module of this package.

Every command module has ``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` lists
them. Bad input raises ``UserError``, printed as one line (``--debug`` shows the traceback).
Training is train.py.
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Dict, List, NamedTuple, Optional

from ..errors import UserError
from ..logs import setup_logging
from . import annotate, check_images, eval, export, import_relabel, push_maps, show

__all__ = ['COMMANDS', 'Command', 'build_parser', 'main']


class Command(NamedTuple):
    module: ModuleType  # with add_arguments(parser) and run(args) -> int
    help: str


COMMANDS: Dict[str, Command] = {
    'annotate': Command(annotate, 'write top-k label maps for a folder of images with any timm model'),
    'import-relabel': Command(import_relabel, 'convert the official ReLabel .pt maps into a label-map dataset'),
    'show': Command(show, 'draw an image with its top-k label-map heat maps'),
    'push-maps': Command(push_maps, 'upload a label-map dataset folder to the Hugging Face Hub'),
    'export': Command(export, 'turn a training checkpoint into a Hugging Face model folder'),
    'eval': Command(eval, 'top-1 and ReaL metrics for any timm model'),
    'check-images': Command(check_images, 'decode every image of a folder; list the ones that do not'),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-multilabel`` parser with one subparser per command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog='timm-multilabel',
        description='Multi-label supervision from single-labeled data for timm: label maps (ReLabel), '
                    'model export and evaluation. Training is train.py.',
    )
    parser.add_argument('--debug', action='store_true', help='show full tracebacks on errors')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS, help='show full tracebacks on errors')
        command.module.add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging()
    try:
        return int(COMMANDS[args.command].module.run(args) or 0)
    except (UserError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f'timm-multilabel {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'timm-multilabel {args.command}: interrupted', file=sys.stderr)
        return 130
