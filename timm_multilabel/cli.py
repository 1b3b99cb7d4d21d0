"""``timm-multilabel`` command line: one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches. Bad input raises ``UserError``, printed as
one line (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Tuple

from .errors import UserError
from .logs import setup_logging

# name -> (module, one-line help); modules are imported only when their command runs.
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    'annotate': ('timm_multilabel.relabel.annotate_cli', 'write top-k label maps for a folder of images with any timm model'),
    'import-relabel': ('timm_multilabel.relabel.import_cli', 'convert the official ReLabel .pt maps into a label-map dataset'),
    'show': ('timm_multilabel.relabel.show', 'draw an image with its top-k label-map heat maps'),
    'push-maps': ('timm_multilabel.hub_cli', 'upload a label-map dataset folder to the Hugging Face Hub'),
    'export': ('timm_multilabel.hub_cli', 'turn a training checkpoint into a Hugging Face model folder'),
    'eval': ('timm_multilabel.eval_cli', 'top-1 and ReaL metrics for any timm model'),
}


def build_parser() -> Tuple[argparse.ArgumentParser, Dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog='timm-multilabel',
        description='Multi-label supervision from single-labeled data for timm: label maps (ReLabel), '
                    'model export and evaluation. Training is train.py.',
    )
    parser.add_argument('--debug', action='store_true', help='show full tracebacks on errors')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS, help='show full tracebacks on errors')
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                p.set_defaults(_unavailable=True)
                continue
            raise
        adder = getattr(module, f'add_{name.replace("-", "_")}_arguments', None) or module.add_arguments
        adder(p)
        modules[name] = module_name
    return parser, modules


def main(argv: Optional[List[str]] = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging()
    if getattr(args, '_unavailable', False):
        print(f'timm-multilabel {args.command}: not available in this version', file=sys.stderr)
        return 2
    module = importlib.import_module(modules[args.command])
    runner = getattr(module, f'run_{args.command.replace("-", "_")}', None) or module.run
    try:
        return int(runner(args) or 0)
    except (UserError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f'timm-multilabel {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'timm-multilabel {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
