"""Writes the timm fixtures of tests/test_timm_flags.py from timm's own train.py (run once, by hand):

    python tests/data/make_timm_fixtures.py PATH/TO/timm/train.py

- timm_1_0_31_train_flags.json: every argument of timm's train.py parser (option strings, dest,
  default, nargs, const, type name, action kind, choices, group);
- timm_1_0_31_args_defaults.yaml: the args.yaml timm's train.py writes for `train.py` with no
  flags (``yaml.safe_dump(args.__dict__, default_flow_style=False)``, as its ``_parse_args``);
- timm_1_0_31_args_recipe.yaml: the same for a typical recipe command line (RECIPE_ARGV below).

Only the parser-building part of train.py runs (its source up to ``def _parse_args``); it needs
timm and torch importable. Nothing is downloaded.
"""
import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
# ResNet-strikes-back A2 style hyper-parameters, plus the flag kinds a recipe uses (lists, k=v, const)
RECIPE_ARGV = [
    '/data/imagenet', '--model', 'resnet50', '--aa', 'rand-m7-mstd0.5-inc1', '--bce-loss', '--bce-target-thresh',
    '0.2', '--mixup', '0.1', '--cutmix', '1.0', '--smoothing', '0', '--opt', 'lamb', '--lr', '5e-3',
    '--weight-decay', '0.02', '--sched', 'cosine', '--epochs', '300', '--warmup-epochs', '5', '--crop-pct', '0.95',
    '--drop-path', '0.05', '--amp', '--amp-dtype', 'bfloat16', '--channels-last', '-b', '256', '--reprob', '0',
    '--train-interpolation', 'bicubic', '--model-ema', '--model-ema-decay', '0.9999', '--pin-mem', '--torchcompile',
    '--opt-betas', '0.9', '0.999', '--model-kwargs', 'zero_init_last=False', '--opt-kwargs', 'trust_clip=True',
    '-j', '8', '--log-wandb', '--wandb-tags', 'rsb', 'a2', '--aug-repeats', '3', '--input-size', '3', '224', '224',
    '--experiment', 'rsb-a2', '--decay-rate', '0.5', '--clip-grad', '1.0', '--clip-mode', 'agc',
]


def timm_parser(path: str) -> argparse.ArgumentParser:
    """The ``parser`` timm's train.py builds at import time (only that part of the script runs)."""
    src = Path(path).read_text()
    src = src[:src.index('def _parse_args')]
    namespace = {'__name__': 'timm_train_parser'}
    exec(compile(src, path, 'exec'), namespace)
    return namespace['parser']


def action_kind(action: argparse.Action) -> str:
    """``store``, ``store_true``, ``ParseKwargs``, ... (the argparse action class, without its prefix)."""
    name = type(action).__name__
    known = {'_StoreAction': 'store', '_StoreTrueAction': 'store_true', '_StoreFalseAction': 'store_false',
             '_StoreConstAction': 'store_const', '_AppendAction': 'append', '_CountAction': 'count',
             '_HelpAction': 'help'}
    return known.get(name, name)


def describe(parser: argparse.ArgumentParser) -> list:
    group_of = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    return [dict(option_strings=a.option_strings, dest=a.dest, default=a.default, nargs=a.nargs, const=a.const,
                 type=getattr(a.type, '__name__', None), action=action_kind(a),
                 choices=list(a.choices) if a.choices is not None else None, group=group_of.get(id(a)))
            for a in parser._actions if action_kind(a) != 'help']


def main(path: str) -> None:
    import timm
    parser = timm_parser(path)
    flags = describe(parser)
    head = json.dumps(dict(
        timm_version=timm.__version__, source="timm's train.py (the one timm 1.0.31 ships)",
        made_by='python tests/data/make_timm_fixtures.py PATH/TO/timm/train.py (exec of its parser-building '
                'part, then argparse.ArgumentParser._actions)'), indent=1)
    body = ',\n  '.join(json.dumps(f) for f in flags)  # one argument a line
    (HERE / 'timm_1_0_31_train_flags.json').write_text(head[:-2] + f',\n "flags": [\n  {body}\n ]\n}}\n')
    for name, argv in (('defaults', []), ('recipe', RECIPE_ARGV)):
        args = parser.parse_args(argv)
        text = yaml.safe_dump(args.__dict__, default_flow_style=False)  # as timm's _parse_args
        header = (f'# args.yaml as timm {timm.__version__} train.py writes it for: train.py {" ".join(argv)}\n'
                  f'# made by tests/data/make_timm_fixtures.py\n')
        (HERE / f'timm_1_0_31_args_{name}.yaml').write_text(header + text)
    print(f'{len(flags)} arguments from {path} (timm {timm.__version__})')


if __name__ == '__main__':
    main(sys.argv[1])
