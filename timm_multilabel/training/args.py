"""train.py's command line: timm's train.py flags with timm's names, defaults and meanings,
plus ``--mile*`` and ``--relabel-*``.

Precedence, lowest first: timm's defaults, the chosen dataset's defaults (digits-grid is a
small dataset with its own sensible settings, see ``DATASET_DEFAULTS``), the YAML file of
``-c/--config``, then flags given on the command line.
"""
from __future__ import annotations

import argparse
import difflib
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import yaml
from timm.utils import ParseKwargs

from ..data.dataset_factory import check_dataset_options, dataset_options
from ..distill import check_distill_args
from ..errors import UserError
from ..metrics import METRIC_KEYS
from ..mile import add_mile_arguments, check_mile_args, mile_kwargs_from_args
from ..registry import LOSSES, PLUGIN_GROUP, TARGET_TRANSFORMS, TASKS
from .model_setup import check_model_flags
from .trackers import check_tracker_args
from .variable_batches import check_variable_batch_args

# Settings that make the built-in data train well in minutes on a CPU; any flag or YAML key
# overrides them. Models train from scratch on the 48x48 grids (16-pixel digits) resized to 32 px.
DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'digits-grid': dict(
        model='resnet10t', img_size=32, epochs=6, batch_size=64, opt='adamw', lr=2e-3,
        weight_decay=0.05, warmup_epochs=1, smoothing=0.0, hflip=0.0, color_jitter=0.0,
        scale=[0.5, 1.0], ratio=[0.9, 1.1], crop_pct=1.0, workers=0, log_interval=20,
        val_split='test', interpolation='bilinear', train_interpolation='bilinear', sched_on_updates=True,
    ),
}


def _group(parser: argparse.ArgumentParser, title: str):
    return parser.add_argument_group(title)


def _cli_value(value: Any) -> str:
    """A default as it is typed on the command line (``0.5 1.0`` for a list)."""
    return ' '.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default once: timm's, plus the built-in data's value where a bare
    ``python train.py`` (digits-grid, no data folder) runs with another one. A help text that
    states its own default (``(default: ...)``) gets no second one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if '(default' in text or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        grid = DATASET_DEFAULTS['digits-grid']
        suffix = ' (default: %(default)s'
        if action.dest in grid and grid[action.dest] != action.default:
            suffix += '; digits-grid: ' + _cli_value(grid[action.dest]).replace('%', '%%')
        return text + suffix + ')'


_DESCRIPTION = (
    'Train a timm image classifier with multi-label supervision recovered from single labels (MILe, ReLabel + '
    'LabelPooling); the flags are those of timm\'s train.py, plus --mile* and --relabel-*. Runs on one device with '
    '`python train.py` or on many GPUs/nodes with `accelerate launch train.py`.')
_EPILOG = (
    'Defaults: with a data folder (DIR, --data-dir) or another --dataset, timm\'s defaults apply (the "default:" '
    'values above). With neither, train.py trains on the built-in digits-grid data with its own defaults, shown as '
    '"digits-grid:" above: ' + ', '.join(
        f'--{k.replace("_", "-")}' + ('' if v is True else f' {_cli_value(v)}')
        for k, v in DATASET_DEFAULTS['digits-grid'].items()) + '. A -c/--config file or a flag overrides either.')


def build_parser() -> argparse.ArgumentParser:
    """The full train.py parser (timm's flags plus ours)."""
    parser = argparse.ArgumentParser(
        prog='train.py',
        description=_DESCRIPTION, epilog=_EPILOG.replace('%', '%%'), formatter_class=_HelpFormatter,
    )
    parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                        help='YAML config file whose keys (flag names with underscores) set the defaults')

    g = _group(parser, 'Dataset')
    g.add_argument('data', nargs='?', metavar='DIR', const=None,
                   help='path to dataset (positional, as in timm, where it is deprecated for --data-dir)')
    g.add_argument('--data-dir', metavar='DIR', help='path to dataset root')
    g.add_argument('--dataset', metavar='NAME', default='digits-grid',
                   help='digits-grid (built in), "" for an image folder, hfds/<name> for a Hugging Face dataset, '
                        'torch/<name> for torchvision (default: digits-grid without a data folder; "", an image '
                        'folder, with DIR or --data-dir, as in timm)')
    g.add_argument('--train-split', metavar='NAME', default='train', help='dataset train split')
    g.add_argument('--val-split', metavar='NAME', default='validation', help='dataset validation split')
    g.add_argument('--train-num-samples', type=int, default=None, metavar='N', help='limit/size of the train set')
    g.add_argument('--val-num-samples', type=int, default=None, metavar='N', help='limit/size of the validation set')
    g.add_argument('--dataset-download', action='store_true', default=False,
                   help='allow downloading torch/ and tfds/ datasets that support it')
    g.add_argument('--class-map', default='', type=str, metavar='FILENAME',
                   help='class name to index mapping file (txt: one name a line; json)')
    g.add_argument('--input-img-mode', default=None, type=str, help='PIL mode input images are converted to')
    g.add_argument('--input-key', default=None, type=str, help='dataset column/key of the input images')
    g.add_argument('--target-key', default=None, type=str, help='dataset column/key of the target labels')
    g.add_argument('--dataset-trust-remote-code', action='store_true', default=False,
                   help="allow a Hugging Face dataset to run code from the dataset's repository")
    g.add_argument('--real-labels', default=None, metavar='FILE',
                   help='ImageNet ReaL labels JSON for the validation set ("timm" for timm\'s bundled file); '
                        'enables ReaL metrics on ImageNet')

    g = _group(parser, 'Model')
    g.add_argument('--model', default='resnet50', type=str, metavar='MODEL', help='name of a timm model')
    g.add_argument('--pretrained', action='store_true', default=False, help='start from pretrained weights')
    g.add_argument('--pretrained-path', default=None, type=str, metavar='FILE',
                   help="load pretrained weights from this file (safetensors or .pth) instead of the Hub, as "
                        "timm does: the backbone from the file, a new classifier for --num-classes (timm's "
                        "train.py reads it only with --pretrained; here the file alone is enough)")
    g.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH', help='load this checkpoint first')
    g.add_argument('--resume', default='', type=str, metavar='PATH',
                   help='resume the run: a checkpoint file, or an --output folder (its last checkpoint)')
    g.add_argument('--no-resume-opt', action='store_true', default=False,
                   help='do not restore optimizer state when resuming')
    g.add_argument('--num-classes', type=int, default=None, metavar='N', help='number of label classes')
    g.add_argument('--gp', default=None, type=str, metavar='POOL',
                   help='global pool type: fast, avg, max, avgmax, avgmaxc (model default if unset)')
    g.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (square)')
    g.add_argument('--in-chans', type=int, default=None, metavar='N', help='image input channels')
    g.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N', help='input dims C H W')
    g.add_argument('--crop-pct', default=None, type=float, metavar='PCT', help='eval center crop percentage')
    g.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='pixel mean')
    g.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='pixel std')
    g.add_argument('--interpolation', default='', type=str, metavar='NAME', help='image resize interpolation')
    g.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size per process')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N', help='validation batch size')
    g.add_argument('--channels-last', action='store_true', default=False, help='use channels_last memory layout')
    g.add_argument('--fuser', default='', type=str, help="TorchScript jit fuser: '', te, old or nvfuser")
    g.add_argument('--grad-accum-steps', type=int, default=1, metavar='N', help='micro-batches per optimizer update')
    g.add_argument('--grad-checkpointing', action='store_true', default=False,
                   help='gradient checkpointing through model blocks/stages')
    g.add_argument('--fast-norm', default=False, action='store_true', help="timm's experimental fast norm layers")
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra model kwargs k=v')
    g.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout rate')
    g.add_argument('--drop-path', type=float, default=None, metavar='PCT', help='drop path rate')
    g.add_argument('--head-init-scale', type=float, default=None, metavar='S',
                   help='multiply the classifier weight and bias by S at initialization (timm)')
    g.add_argument('--head-init-bias', type=float, default=None, metavar='B',
                   help='set the classifier bias to B at initialization (timm); the official MILe code uses '
                        '-log(num_classes), so that initial sigmoids sit near the class prior')
    g.add_argument('--torchcompile-mode', type=str, default=None, help='torch.compile mode')
    g.add_argument('--torchscript', dest='torchscript', action='store_true', help='torch.jit.script the full model')
    g.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor', metavar='BACKEND',
                   help='torch.compile the model with this backend (inductor when given without one)')

    g = _group(parser, 'Device')
    g.add_argument('--device', default='cuda', type=str, help='device (accelerator) to use')
    g.add_argument('--model-dtype', default=None, type=str, help='model dtype override, without AMP (float32 if unset)')
    g.add_argument('--no-ddp-bb', action='store_true', default=False, help='turn off DDP buffer broadcast')
    g.add_argument('--synchronize-step', action='store_true', default=False,
                   help='synchronize the device at the end of each step')
    g.add_argument('--local_rank', default=0, type=int,
                   help='set by torch.distributed launchers (Accelerate takes the rank from its environment)')
    g.add_argument('--device-modules', default=None, type=str, nargs='+',
                   help='Python modules to import for a device backend')

    g = _group(parser, 'Optimizer')
    g.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER', help='timm optimizer name')
    g.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
    g.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
    g.add_argument('--momentum', type=float, default=0.9, metavar='M', help='optimizer momentum')
    g.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay')
    g.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='clip gradient norm/value')
    g.add_argument('--clip-mode', type=str, default='norm', help='gradient clipping mode: norm, value, agc')
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise learning rate decay')
    g.add_argument('--layer-decay-min-scale', type=float, default=0, help='layer-wise lr decay minimum scale clamp')
    g.add_argument('--layer-decay-no-opt-scale', type=float, default=None,
                   help='layer-wise lr decay scale below which parameters are not optimized')
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra optimizer kwargs k=v')

    g = _group(parser, 'Learning rate schedule')
    g.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER', help='LR scheduler')
    g.add_argument('--sched-on-updates', action='store_true', default=False, help='step the schedule per update')
    g.add_argument('--lr', type=float, default=None, metavar='LR', help='learning rate (overrides --lr-base)')
    g.add_argument('--lr-base', type=float, default=0.1, metavar='LR', help='base LR for --lr-base-size samples')
    g.add_argument('--lr-base-size', type=int, default=256, metavar='DIV', help='batch size of --lr-base')
    g.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE', help='"sqrt" or "linear"')
    g.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct',
                   help='learning rate noise on/off epoch percentages')
    g.add_argument('--lr-noise-pct', type=float, default=0.67, metavar='PERCENT', help='learning rate noise limit')
    g.add_argument('--lr-noise-std', type=float, default=1.0, metavar='STDDEV', help='learning rate noise std-dev')
    g.add_argument('--lr-cycle-mul', type=float, default=1.0, metavar='MULT', help='learning rate cycle length multiplier')
    g.add_argument('--lr-cycle-decay', type=float, default=0.5, metavar='MULT', help='LR decay of each cycle')
    g.add_argument('--lr-cycle-limit', type=int, default=1, metavar='N', help='learning rate cycles (enabled if > 1)')
    g.add_argument('--lr-k-decay', type=float, default=1.0, help='learning rate k-decay for cosine/poly')
    g.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate')
    g.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower LR bound')
    g.add_argument('--epochs', type=int, default=300, metavar='N', help='number of epochs')
    g.add_argument('--epoch-repeats', type=float, default=0., metavar='N',
                   help='pass over the training data N times a train epoch (ceil(N * samples), fresh shuffles; '
                        '0: once); unlike timm, for every dataset, not only iterable ones')
    g.add_argument('--start-epoch', default=None, type=int, metavar='N', help='manual epoch number (on resume)')
    g.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                   help='epochs at which multistep decays the LR (increasing)')
    g.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='epoch interval to decay LR')
    g.add_argument('--warmup-epochs', type=int, default=5, metavar='N', help='epochs to warm up LR')
    g.add_argument('--warmup-prefix', action='store_true', default=False, help='exclude warmup from decay')
    g.add_argument('--cooldown-epochs', type=int, default=0, metavar='N', help='epochs at min LR at the end')
    g.add_argument('--patience-epochs', type=int, default=10, metavar='N', help='plateau patience')
    g.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='LR decay rate')

    g = _group(parser, 'Augmentation and regularization')
    g.add_argument('--no-aug', action='store_true', default=False, help='disable all training augmentation')
    g.add_argument('--train-crop-mode', type=str, default=None, help='crop mode for training')
    g.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT', help='random resize scale')
    g.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO',
                   help='random resize aspect ratio')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--vflip', type=float, default=0., help='vertical flip probability')
    g.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='color jitter factor')
    g.add_argument('--color-jitter-prob', type=float, default=None, metavar='PCT',
                   help='probability of applying any color jitter')
    g.add_argument('--grayscale-prob', type=float, default=None, metavar='PCT',
                   help='probability of random grayscale conversion')
    g.add_argument('--gaussian-blur-prob', type=float, default=None, metavar='PCT',
                   help='probability of gaussian blur')
    g.add_argument('--aa', type=str, default=None, metavar='NAME', help='AutoAugment policy, e.g. rand-m9-mstd0.5')
    g.add_argument('--reprob', type=float, default=0., metavar='PCT', help='random erase probability')
    g.add_argument('--remode', type=str, default='pixel', help='random erase mode')
    g.add_argument('--recount', type=int, default=1, help='random erase count')
    g.add_argument('--resplit', action='store_true', default=False,
                   help='do not random erase the first (clean) augmentation split')
    g.add_argument('--aug-repeats', type=float, default=0,
                   help="timm's RepeatAugSampler: each image N times an epoch with its own augmentation, the repeats "
                        "on different processes (also with one process, which timm refuses)")
    g.add_argument('--aug-splits', type=int, default=0, help='augmentation splits (0, or >= 2)')
    g.add_argument('--drop-connect', type=float, default=None, metavar='PCT',
                   help='drop connect rate (deprecated in timm, use --drop-path)')
    g.add_argument('--drop-block', type=float, default=None, metavar='PCT', help='drop block rate')
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha, mixup enabled if > 0')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha, cutmix enabled if > 0')
    g.add_argument('--cutmix-minmax', type=float, nargs='+', default=None, help='cutmix min/max ratio')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixup or cutmix per batch')
    g.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix instead of mixup')
    g.add_argument('--mixup-mode', type=str, default='batch', help='"batch", "pair", or "elem"')
    g.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N', help='turn mixup off after this epoch')
    g.add_argument('--smoothing', type=float, default=0.1,
                   help='label smoothing (0 with --mile, whose pseudo-labels are binary)')
    g.add_argument('--train-interpolation', type=str, default='random', help='training interpolation')
    g.add_argument('--bce-loss', action='store_true', default=False, help='sigmoid binary cross-entropy loss')
    g.add_argument('--bce-sum', action='store_true', default=False,
                   help='sum the BCE loss over classes (then average over samples) instead of averaging over both; '
                        'always on with --mile (the paper\'s Eq. 1)')
    g.add_argument('--bce-target-thresh', type=float, default=None, help='threshold for binarizing BCE targets')
    g.add_argument('--bce-pos-weight', type=float, default=None, help='weight of positive targets in the BCE loss')
    g.add_argument('--jsd-loss', action='store_true', default=False,
                   help='Jensen-Shannon divergence + CE (timm flag; needs --aug-splits, not supported here)')

    g = _group(parser, 'Plugins (registered losses, target transforms and tasks)')
    g.add_argument('--loss', default=None, metavar='NAME',
                   help='registered loss (timm_multilabel.list_losses(), plugins included); default: bce with '
                        '--bce-loss or --mile, else cross_entropy')
    g.add_argument('--target-transform', default='mixup', metavar='NAME',
                   help='registered batch target transform, created with the --mixup/--cutmix arguments '
                        '(timm_multilabel.list_target_transforms())')
    g.add_argument('--task', default=None, metavar='NAME',
                   help='registered training task (timm_multilabel.list_tasks()); default: mile with --mile, '
                        'else classification')
    g.add_argument('--task-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='K=V',
                   help='extra keyword arguments for the task factory')

    g = _group(parser, 'Batch norm')
    g.add_argument('--bn-momentum', type=float, default=None, help='BatchNorm momentum override')
    g.add_argument('--bn-eps', type=float, default=None, help='BatchNorm epsilon override')
    g.add_argument('--sync-bn', action='store_true', help='synchronized BatchNorm across processes')
    g.add_argument('--dist-bn', type=str, default='reduce',
                   help='distribute BatchNorm stats between processes after each epoch: broadcast, reduce or ""')
    g.add_argument('--split-bn', action='store_true', help='separate BatchNorm layers per augmentation split')

    g = _group(parser, 'Model EMA')
    g.add_argument('--model-ema', action='store_true', default=False, help='track an EMA of model weights')
    g.add_argument('--model-ema-force-cpu', action='store_true', default=False,
                   help='track the EMA on CPU, rank 0 only (no EMA validation)')
    g.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay')
    g.add_argument('--model-ema-warmup', action='store_true', help='EMA decay warmup')

    add_mile_arguments(parser)

    g = _group(parser, 'ReLabel (label maps + LabelPooling)')
    g.add_argument('--relabel-maps', default=None, metavar='PATH_OR_REPO',
                   help='label-map dataset (folder from `timm-multilabel annotate`/`import-relabel`, or a Hub id): '
                        'train on per-crop soft targets pooled from the maps')
    g.add_argument('--relabel-fill', type=float, default=0.0, metavar='F',
                   help='logit of classes outside a cell\'s top-k (0 as in the official code)')
    g.add_argument('--relabel-mode', default='local', choices=['local', 'global', 'local-hard', 'global-hard'],
                   help='Table 2 variants: pool over the crop (local) or the whole image (global); '
                        '-hard takes the argmax')

    g = _group(parser, 'Run')
    g.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (also generates digits-grid)')
    g.add_argument('--deterministic', action='store_true', default=False,
                   help='deterministic GPU kernels (cuDNN, cuBLAS, scatter): bit-identical reruns and resumes on '
                        'the same machine, at some speed; CPU runs are deterministic without it')
    g.add_argument('--worker-seeding', type=str, default='all',
                   help="timm's worker seeding: 'all' reseeds numpy in each DataLoader worker from its torch seed, "
                        "'part' keeps the numpy seed torch gave it; augmentation is reseeded per sample from (seed, "
                        "epoch, index) either way, so this reaches only random draws outside a sample's loading")
    g.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between log lines')
    g.add_argument('--val-interval', type=int, default=1, metavar='N',
                   help='epochs between validation and checkpointing')
    g.add_argument('--recovery-interval', type=int, default=0, metavar='N',
                   help='batches between recovery checkpoints (0: none)')
    g.add_argument('--checkpoint-hist', type=int, default=10, metavar='N', help='number of checkpoints to keep')
    g.add_argument('--checkpoint-every', type=int, default=0, metavar='N',
                   help='also write last.pth.tar every N optimizer updates inside an epoch, so --resume continues '
                        'mid-epoch exactly (0: at epoch ends only)')
    g.add_argument('--skip-bad-images', action='store_true', default=False,
                   help='drop training images that cannot be decoded from their batch (listed in summary.json and '
                        'skipped_images.txt) instead of stopping the run; without it the run stops at the first '
                        'one, naming the file, after a checkpoint it can resume from')
    g.add_argument('-j', '--workers', type=int, default=4, metavar='N', help='data loading processes per rank')
    g.add_argument('--save-images', action='store_true', default=False,
                   help='save images of input batches every log interval, for debugging')
    g.add_argument('--pin-mem', action='store_true', default=False,
                   help='pin CPU memory in the DataLoaders (faster copies to a GPU, sometimes)')
    g.add_argument('--no-prefetcher', action='store_true', default=False,
                   help="as timm: workers convert and normalize each image to float. By default they hand out "
                        "uint8 images and whole batches are normalized on the device (timm's prefetcher), except "
                        "with --reprob, --aug-splits, --relabel-maps, --train-img-sizes, --naflex-loader (and --tta "
                        "for evaluation), which need float images per sample")
    g.add_argument('--tta', type=int, default=0, metavar='N',
                   help='test-time augmentation: evaluate the mean output of N views of each image (up to 10: '
                        'center crop, its flip, the 4 corner crops, their flips); 0 for none')
    g.add_argument('--use-multi-epochs-loader', action='store_true', default=False,
                   help="no effect: DataLoader workers already persist across epochs here (timm's "
                        "MultiEpochsDataLoader also fetches the next epoch early, which per-epoch augmentation "
                        "seeds do not allow)")
    g.add_argument('--amp', action='store_true', default=False, help='mixed precision (Accelerate autocast)')
    g.add_argument('--amp-dtype', default='float16', type=str, help='float16 or bfloat16 (bfloat16 on CPU)')
    g.add_argument('--output', default='', type=str, metavar='DIR',
                   help='folder for summary, checkpoints, curves and the Hugging Face model folder '
                        '(default ./output/train/<experiment>)')
    g.add_argument('--experiment', default='', type=str, metavar='NAME', help='run name (sub-folder of ./output/train)')
    g.add_argument('--overwrite', action='store_true', default=False, help='reuse an --output that holds another run')
    g.add_argument('--eval-metric', default='top1', type=str, metavar='METRIC',
                   help='metric that picks the best checkpoint: top1, real_acc, real_f1@0.25, mAP, loss')
    g.add_argument('--push-to-hub', default=None, metavar='REPO_ID', help='upload the model folder at the end')
    g.add_argument('--hub-private', action='store_true', default=False, help='make the Hub repo private')
    g.add_argument('--debug', action='store_true', default=False, help='full tracebacks on errors')

    g = _group(parser, 'Experiment tracking')
    g.add_argument('--log-wandb', action='store_true', default=False, help='log metrics to Weights & Biases')
    g.add_argument('--wandb-project', default=None, type=str, help='wandb project name')
    g.add_argument('--wandb-tags', default=[], type=str, nargs='+', help='wandb tags')
    g.add_argument('--wandb-resume-id', default='', type=str, metavar='ID', help='wandb run id to continue (with --resume)')
    g.add_argument('--log-with', default=None, nargs='+', metavar='NAME',
                   help='also log per-epoch metrics to these Accelerate trackers (tensorboard, wandb, mlflow, '
                        'comet_ml, aim, clearml, dvclive, ...); local ones write under --output (TensorBoard: '
                        '<output>/<wandb-project or timm-multilabel>/)')

    g = _group(parser, 'Scheduled resolution')
    g.add_argument('--train-img-sizes', type=int, nargs='+', default=None,
                   help='per-batch square image sizes for scheduled resolution training')
    g.add_argument('--train-batch-sizes', type=int, nargs='+', default=None,
                   help='batch size for each --train-img-sizes choice (--batch-size for each if unset)')
    g.add_argument('--train-size-probs', type=float, nargs='+', default=None,
                   help='sampling weights of --train-img-sizes (uniform if unset)')
    g.add_argument('--train-size-schedule', type=str, default='constant', choices=('constant', 'progressive'),
                   help='resolution schedule; progressive moves from the first size to the last')
    g.add_argument('--train-size-schedule-spread', type=float, default=0.65,
                   help='progressive schedule spread, in size-index units')
    g.add_argument('--train-size-random-mix', type=float, default=0.1,
                   help='fraction of uniform random sizes mixed into a progressive schedule')
    g.add_argument('--train-batches-per-epoch', '--train-steps-per-epoch', type=int, default=None,
                   help='loader batches (before gradient accumulation) per epoch and process, passing over the '
                        'data as often as needed; inferred if unset')
    g.add_argument('--variable-batch-loss-scale', default='none', type=str, choices=('none', 'sqrt', 'linear'),
                   help='scale gradients relative to the average scheduled batch size')

    g = _group(parser, 'NaFlex')
    g.add_argument('--naflex-loader', action='store_true', default=False,
                   help="timm's NaFlex loader (variable sequence lengths; a NaFlex model)")
    g.add_argument('--naflex-train-seq-lens', type=int, nargs='+', default=[128, 256, 576, 784, 1024],
                   help='training sequence lengths')
    g.add_argument('--naflex-max-seq-len', type=int, default=576, help='fixed sequence length for validation')
    g.add_argument('--naflex-patch-sizes', type=int, nargs='+', default=None,
                   help='patch sizes for variable patch size training, e.g. 8 12 16 24 32')
    g.add_argument('--naflex-patch-size-probs', type=float, nargs='+', default=None,
                   help='probability of each patch size (sum 1; uniform if unset)')
    g.add_argument('--naflex-loss-scale', default='linear', type=str, choices=('none', 'sqrt', 'linear'),
                   help='scale the loss (gradient) by batch size')
    g.add_argument('--naflex-patchify-channels-first', action='store_true', default=False,
                   help='emit patches in C-P-P (channels-first) flat layout instead of P-P-C')

    g = _group(parser, 'Knowledge distillation')
    g.add_argument('--kd-model-name', default=None, type=str, help='teacher model for knowledge distillation')
    g.add_argument('--kd-distill-type', default='logit', type=str, choices=['logit', 'feature', 'token'],
                   help='logit: outputs; feature: intermediate features; token: models with distillation heads')
    g.add_argument('--kd-loss-type', default='kl', type=str, help='logit distillation loss (only kl, as in timm)')
    g.add_argument('--distill-loss-weight', default=None, type=float,
                   help='weight of the distillation loss; with --task-loss-weight too: task_w * task + distill_w * '
                        'distill; 1.0 if only this is given')
    g.add_argument('--task-loss-weight', default=None, type=float,
                   help='weight of the task loss; alone: task_w * task + (1 - task_w) * distill; 1.0 if unset')
    g.add_argument('--kd-temperature', default=4.0, type=float, help='softmax temperature of the distillation')
    g.add_argument('--kd-student-feature-dim', default=None, type=int,
                   help="student feature dim (model's head_hidden_size or num_features if unset)")
    g.add_argument('--kd-teacher-feature-dim', default=None, type=int,
                   help="teacher feature dim (model's head_hidden_size or num_features if unset)")
    g.add_argument('--kd-token-distill-type', default='soft', type=str, choices=['soft', 'hard'],
                   help='soft: KL with temperature; hard: CE on the teacher argmax')
    return parser


def _flag_names(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def _translate_legacy_keys(cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Keys that older timm train.py versions wrote to args.yaml (and that published recipes still
    carry), translated to today's flags; those whose meaning is gone are refused unless off."""
    cfg = dict(cfg)
    for key in ('native_amp', 'apex_amp', 'dynamo', 'bn_tf', 'aot_autograd'):
        if key in cfg and not isinstance(cfg[key], bool):
            raise UserError(f'{where}: {key}: expected true or false, got {cfg[key]!r}')
    if cfg.pop('native_amp', False) | cfg.pop('apex_amp', False):
        cfg['amp'] = True  # timm's native / apex AMP: mixed precision, here Accelerate's autocast
    impl = cfg.pop('amp_impl', 'native')
    if impl not in ('native', 'apex'):
        raise UserError(f"{where}: amp_impl: expected native or apex, got {impl!r}")
    for old, new in (('jsd', 'jsd_loss'), ('iters_to_accum', 'grad_accum_steps')):
        if old in cfg:
            value = cfg.pop(old)
            cfg.setdefault(new, value)
    backend = cfg.pop('dynamo_backend', None)
    if cfg.pop('dynamo', False) is True:
        cfg.setdefault('torchcompile', backend or 'inductor')
    for old, instead in (('bn_tf', 'bn_eps and bn_momentum'), ('aot_autograd', 'torchcompile')):
        if cfg.pop(old, False):
            raise UserError(f'{where}: {old} was removed from timm; use {instead}')
    multiplier = cfg.pop('validation_batch_size_multiplier', 1)
    if multiplier not in (1, None) and cfg.get('validation_batch_size') is None:
        if not isinstance(multiplier, int) or isinstance(multiplier, bool) or multiplier < 1:
            raise UserError(f'{where}: validation_batch_size_multiplier: expected an integer >= 1, got {multiplier!r}')
        cfg['validation_batch_size'] = multiplier * int(cfg.get('batch_size', 128))
    return cfg


def read_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """The ``-c/--config`` YAML as flag defaults ``{dest: value}``: our keys, every key of an
    args.yaml written by timm's train.py (older versions' keys translated) and timm's flat recipe
    files; each value is parsed as its flag parses the command line. A key that is neither timm's
    nor ours is refused in one line. ``config`` itself (written to our args.yaml) is skipped."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f'--config {path}: cannot read ({e.strerror})')
    except yaml.YAMLError as e:
        raise UserError(f'--config {path}: not valid YAML ({str(e).splitlines()[0]})')
    if not isinstance(cfg, dict):
        raise UserError(f'--config {path}: expected a mapping of flag names to values')
    known = _flag_names(parser)
    cfg = {str(k).replace('-', '_'): v for k, v in cfg.items()}
    cfg.pop('config', None)
    cfg = _translate_legacy_keys(cfg, f'--config {path}')
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        raise UserError(f'--config {path}: unknown key(s) {", ".join(unknown)}')
    return {k: config_value(known[k], v, f'--config {path}: {k}') for k, v in cfg.items()}


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse train.py's arguments; returns (args, yaml text of the resolved args)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)  # dataset and config file, to layer defaults
    cfg = read_config(pre.config, parser) if pre.config else {}

    dataset = cfg.get('dataset', pre.dataset)
    dataset_given = 'dataset' in cfg or any(a == '--dataset' or a.startswith('--dataset=') for a in argv)
    if not dataset_given and (pre.data_dir or pre.data or cfg.get('data_dir') or cfg.get('data')):
        # timm: `train.py DIR` / `--data-dir DIR` is an image folder (the built-in data only without one)
        dataset = ''
        parser.set_defaults(dataset='')
    parser.set_defaults(**DATASET_DEFAULTS.get(dataset, {}))
    parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    if args.mile and '--smoothing' not in argv and 'smoothing' not in cfg:
        # timm's default label smoothing (0.1) does not apply to MILe's binary pseudo-labels.
        args.smoothing = 0.0
    if not args.data_dir:
        args.data_dir = args.data  # timm: the positional DIR when --data-dir is not given
    # libyaml's emitter when present: the same text, several times faster than the pure-Python one
    dumper = getattr(yaml, 'CSafeDumper', yaml.SafeDumper)
    args_text = yaml.dump(vars(args), Dumper=dumper, default_flow_style=False, sort_keys=True)
    return args, args_text


def _flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _parse_one(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) and action.type in (int, float):
        raise UserError(f'{where}: expected a number, got {value}')
    if isinstance(value, (list, dict)):
        raise UserError(f'{where}: expected one value, got {value!r}')
    try:
        parsed = action.type(str(value)) if callable(action.type) else str(value)
    except (TypeError, ValueError):
        kind = {int: 'an integer', float: 'a number'}.get(action.type, 'a value')
        raise UserError(f'{where}: expected {kind}, got {value!r}') from None
    if action.choices is not None and parsed not in action.choices:
        raise UserError(f'{where}: expected one of {", ".join(map(str, action.choices))}, got {value!r}')
    return parsed


def config_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML config value parsed as its flag parses the command line (``epochs: 1.5`` and
    ``bce_loss: "false"`` are refused, not taken); ``where`` starts the one-line error."""
    if value is None and action.default is not None:
        raise UserError(f'{where}: expected a value (its default is {action.default!r}), got null')
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserError(f'{where}: expected true or false, got {value!r}')
        return value
    if isinstance(action, ParseKwargs):
        if not isinstance(value, dict):
            raise UserError(f'{where}: expected a mapping of keyword arguments, got {value!r}')
        return value
    if action.nargs in ('+', '*') or isinstance(action.nargs, int):
        if value is None:
            return None
        if not isinstance(value, list):
            raise UserError(f'{where}: expected a list, got {value!r}')
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise UserError(f'{where}: expected {action.nargs} values, got {len(value)}')
        if action.nargs == '+' and not value and action.default != []:  # timm's wandb_tags: []
            raise UserError(f'{where}: expected at least one value')
        return [_parse_one(action, v, where) for v in value]
    return _parse_one(action, value, where)


# value ranges of flags, checked after parsing (flags, configs and dataset defaults alike)
_AT_LEAST_1 = ('batch_size', 'epochs', 'grad_accum_steps', 'checkpoint_hist', 'log_interval', 'lr_base_size',
               'img_size', 'num_classes', 'in_chans', 'validation_batch_size', 'train_num_samples',
               'val_num_samples', 'recount', 'patience_epochs', 'val_interval', 'lr_cycle_limit',
               'naflex_max_seq_len', 'train_batches_per_epoch', 'kd_student_feature_dim', 'kd_teacher_feature_dim')
_AT_LEAST_0 = ('workers', 'checkpoint_every', 'warmup_epochs', 'cooldown_epochs', 'mixup_off_epoch', 'start_epoch',
               'seed', 'weight_decay', 'warmup_lr', 'min_lr', 'color_jitter', 'mixup', 'cutmix', 'layer_decay',
               'decay_epochs', 'recovery_interval', 'tta', 'aug_splits', 'aug_repeats', 'epoch_repeats',
               'layer_decay_min_scale', 'lr_noise_std', 'distill_loss_weight', 'task_loss_weight')
_POSITIVE = ('lr', 'lr_base', 'clip_grad', 'opt_eps', 'decay_rate', 'model_ema_decay', 'kd_temperature',
             'lr_cycle_mul', 'bn_eps')
_PROBABILITY = ('hflip', 'vflip', 'reprob', 'mixup_prob', 'mixup_switch_prob', 'drop', 'drop_path', 'model_ema_decay',
                'color_jitter_prob', 'grayscale_prob', 'gaussian_blur_prob', 'drop_connect', 'drop_block',
                'train_size_random_mix', 'bn_momentum', 'lr_cycle_decay')
_BELOW_1 = ('smoothing', 'momentum')


def _check_ranges(args: argparse.Namespace) -> None:
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UserError(f'--{name.replace("_", "-")} {value}: must be a finite number')

    def refuse(name: str, rule: str) -> None:
        raise UserError(f'--{name.replace("_", "-")} {getattr(args, name)}: must be {rule}')

    for name in _AT_LEAST_1:
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            refuse(name, '>= 1')
    for name in _AT_LEAST_0:
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            refuse(name, '>= 0')
    for name in _POSITIVE:
        if getattr(args, name, None) is not None and getattr(args, name) <= 0:
            refuse(name, '> 0')
    for name in _PROBABILITY:
        if getattr(args, name, None) is not None and not 0 <= getattr(args, name) <= 1:
            refuse(name, 'in [0, 1]')
    for name in _BELOW_1:
        if getattr(args, name, None) is not None and not 0 <= getattr(args, name) < 1:
            refuse(name, 'in [0, 1)')


def _check_model_name(name: str) -> None:
    """A timm architecture name (``hf-hub:`` / ``local-dir:`` ids are resolved when loaded)."""
    if ':' in name or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.7)
    hint = f'; did you mean {" or ".join(close)}?' if close else '; see timm.list_models()'
    raise UserError(f'--model {name}: not a timm model{hint}')


def _check_timm_combinations(args: argparse.Namespace) -> None:
    """Combinations of timm's flags that cannot mean anything (timm asserts most of them)."""
    if args.torchscript and args.torchcompile:
        raise UserError('--torchscript and --torchcompile both compile the model; choose one')
    if args.torchcompile_mode and not args.torchcompile:
        raise UserError(f'--torchcompile-mode {args.torchcompile_mode} applies to --torchcompile; add --torchcompile')
    if args.torchscript and args.sync_bn:
        raise UserError('--sync-bn cannot be used with --torchscript (SyncBatchNorm does not script)')
    if args.model_dtype and args.model_dtype not in ('float32', 'float16', 'bfloat16'):
        raise UserError(f'--model-dtype {args.model_dtype}: expected float32, float16 or bfloat16')
    if args.amp and args.model_dtype not in (None, '', 'float32'):
        raise UserError(f'--amp needs a float32 model; --model-dtype {args.model_dtype} does not apply with it')
    if args.aug_splits == 1:
        raise UserError('--aug-splits 1: must be 0 (off) or >= 2; one split is the plain batch')
    if args.split_bn and not (args.aug_splits >= 2 or args.resplit):
        raise UserError('--split-bn keeps BatchNorm layers per augmentation split; add --aug-splits >= 2 (or --resplit)')
    if args.split_bn and args.sync_bn:
        raise UserError('--split-bn and --sync-bn cannot be combined (timm converts to one or the other)')
    if args.dist_bn not in ('broadcast', 'reduce', ''):
        raise UserError(f'--dist-bn {args.dist_bn}: expected broadcast, reduce or ""')
    if args.wandb_resume_id and not args.resume:
        raise UserError(f'--wandb-resume-id {args.wandb_resume_id} continues a resumed run; add --resume')
    if args.naflex_loader:
        if args.relabel_maps:
            raise UserError('--naflex-loader cannot be combined with --relabel-maps: targets are pooled from the '
                            'label map under each fixed-size crop box, and NaFlex patch sequences have no such box')
        if args.aug_splits >= 2:
            raise UserError('--naflex-loader cannot be combined with --aug-splits (NaFlex batches are not split)')
    if args.naflex_patch_size_probs and len(args.naflex_patch_size_probs) != len(args.naflex_patch_sizes or []):
        raise UserError('--naflex-patch-size-probs needs one probability per --naflex-patch-sizes value')


def _check_loader_flags(args: argparse.Namespace, mixing: bool) -> None:
    """Loader flag values and combinations that cannot mean anything (see training/loaders.py)."""
    if args.jsd_loss and args.aug_splits < 2:
        raise UserError('--jsd-loss compares the augmentation splits of each image; add --aug-splits N (N >= 2)')
    if args.jsd_loss and (args.mile or args.bce_loss or args.loss not in (None, 'jsd_cross_entropy')):
        raise UserError('--jsd-loss is a loss of its own (softmax cross-entropy on the clean split + Jensen-Shannon '
                        'divergence across splits); it cannot be combined with --mile, --bce-loss or --loss')
    if args.aug_splits >= 2 and args.relabel_maps:
        raise UserError('--aug-splits cannot be combined with --relabel-maps: LabelPooling pools the target of one '
                        'crop box per sample and collates one image per sample, not N splits')
    if args.aug_splits >= 2 and mixing:
        raise UserError('--aug-splits cannot be combined with Mixup/CutMix: mixing the batch would mix images of '
                        'different splits (timm refuses it too)')
    if args.aug_splits >= 2 and args.no_aug:
        raise UserError('--aug-splits with --no-aug: there is no augmentation to split')
    if args.resplit and args.aug_splits < 2:
        raise UserError('--resplit keeps random erasing off the clean split of --aug-splits; without splits timm\'s '
                        'GPU prefetcher erases the second half of each batch, and this train.py erases per sample in '
                        'the workers (timm\'s --no-prefetcher loading, where --resplit does nothing): add --aug-splits N')
    for flag, value in (('--epoch-repeats', args.epoch_repeats), ('--aug-repeats', args.aug_repeats)):
        if 0 < value < 1:
            raise UserError(f'{flag} {value}: must be 0 (off) or >= 1')
    if args.epoch_repeats and args.train_batches_per_epoch:
        raise UserError('--epoch-repeats and --train-batches-per-epoch both set the length of an epoch; give one')
    if args.worker_seeding not in ('all', 'part'):
        raise UserError(f'--worker-seeding {args.worker_seeding}: expected all or part')
    if args.tta > 10:
        raise UserError(f'--tta {args.tta}: at most 10 views (center, flip, 4 corners and their flips)')
    if args.tta > 1 and getattr(args, 'naflex_loader', False):
        raise UserError('--tta cannot be combined with --naflex-loader: the views are fixed-size crops, NaFlex '
                        'evaluates patch sequences')


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag values and combinations that cannot work, in one line, before any work is done."""
    _check_ranges(args)
    _check_model_name(args.model)
    if args.initial_checkpoint and not Path(args.initial_checkpoint).is_file():
        raise UserError(f'--initial-checkpoint {args.initial_checkpoint}: no such file')
    if args.skip_bad_images and args.batch_size < 4:
        raise UserError(f'--skip-bad-images drops undecodable images from their batch; with --batch-size '
                        f'{args.batch_size} a batch could shrink to one sample, which BatchNorm cannot train on: '
                        f'use --batch-size >= 4')
    mixing = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    _check_loader_flags(args, mixing)
    if mixing and args.batch_size % 2:
        raise UserError(f'--batch-size {args.batch_size}: Mixup/CutMix mix each sample with its mirror in the batch '
                        f'and need an even batch size')
    if mixing and args.mixup_mode not in ('batch', 'pair', 'elem'):
        raise UserError(f'--mixup-mode {args.mixup_mode}: expected batch, pair or elem')
    if args.dataset != 'digits-grid' and not args.data_dir and not args.dataset.startswith(('hfds/', 'hfids/')):
        raise UserError(f'--dataset {args.dataset or "(image folder)"} needs --data-dir')
    if args.amp and args.amp_dtype not in ('float16', 'bfloat16'):
        raise UserError(f'--amp-dtype {args.amp_dtype}: expected float16 or bfloat16')
    if len(args.scale) != 2 or len(args.ratio) != 2:
        raise UserError('--scale and --ratio take two numbers each')
    if args.eval_metric not in (*METRIC_KEYS, 'loss'):
        raise UserError(f'--eval-metric {args.eval_metric}: expected {", ".join(METRIC_KEYS)} or loss')
    if args.relabel_mode != 'local' and not args.relabel_maps:
        raise UserError(f'--relabel-mode {args.relabel_mode} needs --relabel-maps')
    check_mile_args(args)
    _check_timm_combinations(args)
    check_variable_batch_args(args)  # --train-img-sizes, --naflex-*: see training/variable_batches.py
    sigmoid_loss = args.bce_loss or args.mile or args.loss == 'bce'
    for flag, value in (('--bce-sum', args.bce_sum), ('--bce-pos-weight', args.bce_pos_weight),
                        ('--bce-target-thresh', args.bce_target_thresh)):
        if value not in (None, False) and not sigmoid_loss:
            raise UserError(f'{flag} applies to the BCE loss; add --bce-loss (or --mile)')
    for flag, registry, name in (('--loss', LOSSES, args.loss), ('--task', TASKS, args.task),
                                 ('--target-transform', TARGET_TRANSFORMS, args.target_transform)):
        if name is not None and name not in registry:
            raise UserError(f'{flag} {name}: unknown; available: {", ".join(registry.names())} '
                            f'(plugins register more through the entry-point group {PLUGIN_GROUP})')
    if args.mile and args.task not in (None, 'mile'):
        raise UserError(f'--mile selects the mile task; --task {args.task} does not apply')
    check_dataset_options(args.dataset, args.data_dir, **dataset_options(args))  # e.g. --class-map with digits-grid
    check_tracker_args(args)  # unknown tracker names, tracker packages not installed
    check_model_flags(args)  # --fuser, --drop-connect, --val-interval, --recovery-interval, --device (model_setup.py)
    check_distill_args(args)  # --kd-*: ignored without --kd-model-name, or with another --kd-distill-type


def loss_name(args: argparse.Namespace) -> str:
    """The registered loss train.py creates: ``--loss``, else ``bce`` for sigmoid training."""
    if getattr(args, 'jsd_loss', False):
        return 'jsd_cross_entropy'  # timm's --jsd-loss (with --aug-splits)
    return args.loss or ('bce' if args.bce_loss or args.mile else 'cross_entropy')


def task_name(args: argparse.Namespace) -> str:
    """The registered task train.py creates: ``--task``, else ``mile`` or ``classification``."""
    return args.task or ('mile' if args.mile else 'classification')


def task_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """Task factory arguments from the flags: ``--mile*`` for MILe, plus ``--task-kwargs``."""
    return {**(mile_kwargs_from_args(args) if args.mile else {}), **args.task_kwargs}


def loss_kwargs(args: argparse.Namespace, soft_targets: bool) -> Dict[str, Any]:
    """Arguments of the loss factory; ``soft_targets``: the targets are dense [B, C] (Mixup,
    pooled label maps). With ``--mile`` the BCE is summed over classes (Eq. 1 of the paper)."""
    kwargs: Dict[str, Any] = dict(smoothing=args.smoothing, target_threshold=args.bce_target_thresh,
                                  soft_targets=soft_targets)
    if loss_name(args) == 'bce':
        kwargs.update(sum_classes=args.bce_sum or args.mile, pos_weight=args.bce_pos_weight)
    if loss_name(args) == 'jsd_cross_entropy':
        kwargs.update(num_splits=args.aug_splits)
    return kwargs
