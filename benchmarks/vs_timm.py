"""Side by side with timm's own train.py: the same flags on the same image folder, top-1 and time.

    python benchmarks/vs_timm.py --timm-train PATH/timm/train.py [--seed 0 1 2 3 4] [--json FILE]

PATH is timm's train.py as the user has it (the script timm's repository ships beside the
package; this benchmark downloads nothing). For each seed it runs ``python PATH DIR FLAGS`` and
``python train.py DIR FLAGS`` with identical training flags, one after the other, alternating
the order from seed to seed (timm, ours; ours, timm; ...) so that a drift in the machine's speed
hits both scripts alike. The default flags (``SETTING``) are

    --model resnet10t --num-classes 10 --img-size 32 --opt adamw --lr 2e-3 --sched cosine
    --warmup-epochs 0 --batch-size 64 --epochs 4 --workers 2 --device cpu --seed S

on ``DIR``, a folder built here, offline and deterministically, from scikit-learn's bundled
8x8 digits: each digit upscaled (nearest) to 32 px, gray in RGB PNG files, in timm's layout
``DIR/train/<digit>/`` (the package's stratified 75% pool: 1347 images) and
``DIR/validation/<digit>/`` (the other 450). Five seeds x two scripts take about 7 minutes on two
idle CPU cores. Each script otherwise runs
with its own defaults (timm's defaults are ours). ``--num-classes 10`` is needed by timm's script,
which does not count the folder's classes (without it timm trains a 1000-way head).

Reported per seed: the final epoch's top-1 on the validation folder (timm's ``summary.csv``
``eval_top1``; our ``summary.json`` ``last_metrics.top1``), the wall seconds of the whole
process (start-up, data, training, evaluation, checkpoints: what a user waits) and its CPU
seconds (user + system of the process and its data-loader workers, from
``resource.getrusage(RUSAGE_CHILDREN)``); then top-1 mean +- std (sample std over seeds) for
each script, the difference of the means against the larger of the two stds (the seed spread),
and ours/timm time as the median of the per-seed ratios and the ratio of the means. The CPU
ratio is the figure to trust on a shared machine (other jobs stretch wall time, not CPU time);
the 1-minute load average before each run is recorded. Both scripts' ``args.yaml`` are compared:
a training argument that resolved differently is reported (``flag_differences``).

Targets (issue 12): ours' mean top-1 not lower than timm's beyond the seed spread; ours/timm wall
time <= 1.05 on CPU with 2 workers. ``--quick`` is a seconds-long smoke run (a few images per
class, 1 epoch) whose numbers mean nothing.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
from PIL import Image

from _bench import ROOT, TRAIN_PY, fmt, text_table, train_flags, work_folder, write_json
from timm_multilabel.data.digits_grid import load_source_digits, source_split_indices
from timm_multilabel.errors import UserError
from timm_multilabel.fileio import atomic_path

# the training flags both scripts get (besides the data folder, --seed and their output folders)
SETTING: Dict[str, Any] = dict(
    model='resnet10t', num_classes=10, img_size=32, opt='adamw', lr=2e-3, sched='cosine', warmup_epochs=0,
    batch_size=64, epochs=4, workers=2, device='cpu')
QUICK_SETTING: Dict[str, Any] = dict(SETTING, img_size=16, batch_size=16, epochs=1, workers=1)
FOLDER = dict(image_px=32, per_class=None)   # per_class: images per class and split (None: all)
QUICK_FOLDER = dict(image_px=16, per_class=4)

TARGET_WALL_RATIO = 1.05
# args.yaml keys that name where a run writes (or its data folder, which timm stores as ``data``)
_NOT_TRAINING = {'output', 'experiment', 'data', 'data_dir', 'overwrite', 'resume', 'config'}


# ------------------------------------------------------------------------------ the image folder

def build_image_folder(root: Path, image_px: int = 32, per_class: Optional[int] = None) -> Dict[str, int]:
    """scikit-learn's digits as PNG files in timm's layout ``root/{train,validation}/<digit>/<i>.png``.

    Each 8x8 digit (0..16) is scaled to 0..255 and upscaled by nearest neighbour to ``image_px``
    (a multiple of 8), gray copied to RGB. Train / validation are the package's stratified split of
    the 1797 digits (1347 / 450). ``per_class``: only the first N images of each class per split.
    A folder that holds a finished build of the same arguments is kept. Returns images per split.
    """
    if image_px < 8 or image_px % 8:
        raise UserError(f'image_px {image_px}: expected a multiple of 8')
    marker = root / 'folder.json'
    wanted = {'image_px': image_px, 'per_class': per_class}
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get('args') == wanted:
            return recorded['counts']
    if root.exists():
        shutil.rmtree(root)
    images, targets = load_source_digits()
    counts: Dict[str, int] = {}
    for split, folder in (('train', 'train'), ('test', 'validation')):
        indices = source_split_indices(split)
        if per_class is not None:
            indices = np.concatenate([indices[targets[indices] == c][:per_class] for c in range(10)])
        for i in indices:
            gray = np.round(images[i].astype(np.float32) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            gray = gray.repeat(image_px // 8, axis=0).repeat(image_px // 8, axis=1)
            with atomic_path(root / folder / str(targets[i]) / f'{i:04d}.png', suffix='.png') as tmp:
                Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp, format='PNG')
        counts[folder] = int(len(indices))
    write_json(marker, {'args': wanted, 'counts': counts})
    return counts


# ------------------------------------------------------------------------------------ one run

def timed_run(cmd: Sequence[str], log_path: Path, env: Dict[str, str], timeout: Optional[float] = None
              ) -> Dict[str, float]:
    """Run ``cmd`` (stdout and stderr to ``log_path``); wall and CPU seconds of the process and its
    children (data-loader workers), and the 1-minute load average before it started.
    ``RuntimeError`` with the end of the log if it fails."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(map(str, cmd[:2]))} exited {proc.returncode}; end of {log_path}:\n'
                           f'{log_path.read_text()[-3000:]}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {'wall_seconds': wall, 'cpu_seconds': cpu, 'load_before': load}


def timm_top1(run_dir: Path) -> float:
    """The final epoch's ``eval_top1`` from timm's ``summary.csv`` (one row per epoch)."""
    path = run_dir / 'summary.csv'
    if not path.is_file():
        raise RuntimeError(f'{path}: timm wrote no summary.csv')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows or not rows[-1].get('eval_top1'):
        raise RuntimeError(f'{path}: no eval_top1 in the last row')
    return float(rows[-1]['eval_top1'])


def our_top1(run_dir: Path) -> Tuple[float, Optional[float]]:
    """The final epoch's top-1 and the training seconds from our ``summary.json``."""
    summary = json.loads((run_dir / 'summary.json').read_text())
    return float(summary['last_metrics']['top1']), summary.get('train_seconds')


def flag_differences(timm_args: Dict[str, Any], our_args: Dict[str, Any]) -> Dict[str, List[Any]]:
    """Training arguments both ``args.yaml`` files hold that resolved to different values
    ``{name: [timm's, ours]}`` (output folders and the data folder's key aside), plus the data
    folder itself (timm: ``data`` or ``data_dir``; ours: ``data_dir``) when it differs."""
    diff = {k: [timm_args[k], our_args[k]] for k in sorted(set(timm_args) & set(our_args))
            if k not in _NOT_TRAINING and timm_args[k] != our_args[k]}
    timm_data = timm_args.get('data') or timm_args.get('data_dir')
    if timm_data != our_args.get('data_dir'):
        diff['data_dir'] = [timm_data, our_args.get('data_dir')]
    return diff


def run_seed(timm_train: Path, data_dir: Path, work: Path, setting: Dict[str, Any], seed: int, timm_first: bool,
             env: Dict[str, str], timeout: Optional[float] = None) -> Dict[str, Any]:
    """Both scripts on one seed, in the given order; their top-1, times and flag differences."""
    import yaml

    flags = [str(data_dir), *train_flags(**setting, seed=seed)]
    timm_dir, our_dir = work / f'timm-seed{seed}', work / f'ours-seed{seed}'
    result: Dict[str, Any] = {'seed': seed, 'order': 'timm first' if timm_first else 'ours first'}
    for who in (('timm', 'ours') if timm_first else ('ours', 'timm')):
        if who == 'timm':
            shutil.rmtree(timm_dir, ignore_errors=True)  # timm would write to timm-seedN-1 instead
            cmd = [sys.executable, timm_train, *flags, '--output', work, '--experiment', timm_dir.name]
        else:
            cmd = [sys.executable, TRAIN_PY, *flags, '--output', our_dir, '--overwrite']
        print(f'seed {seed}: {who} ...', flush=True)
        times = timed_run(cmd, work / f'{who}-seed{seed}.log', env, timeout)
        result[who] = times
    result['timm']['top1'] = timm_top1(timm_dir)
    result['ours']['top1'], result['ours']['train_seconds'] = our_top1(our_dir)
    result['flag_differences'] = flag_differences(yaml.safe_load((timm_dir / 'args.yaml').read_text()),
                                                  yaml.safe_load((our_dir / 'args.yaml').read_text()))
    result['wall_ratio'] = result['ours']['wall_seconds'] / result['timm']['wall_seconds']
    result['cpu_ratio'] = result['ours']['cpu_seconds'] / result['timm']['cpu_seconds']
    return result


# ---------------------------------------------------------------------------------- the table

def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float('nan'))


def summarize(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Means, sample stds, the top-1 verdict and the time ratios over the per-seed results."""
    if not runs:
        raise UserError('no runs to summarize')
    out: Dict[str, Any] = {'seeds': [r['seed'] for r in runs]}
    for who in ('timm', 'ours'):
        top1_mean, top1_std = _mean_std([r[who]['top1'] for r in runs])
        out[who] = {'top1_mean': top1_mean, 'top1_std': top1_std,
                    'wall_mean': statistics.fmean(r[who]['wall_seconds'] for r in runs),
                    'cpu_mean': statistics.fmean(r[who]['cpu_seconds'] for r in runs)}
    diff = out['ours']['top1_mean'] - out['timm']['top1_mean']
    spread = max(out['timm']['top1_std'], out['ours']['top1_std'])
    out['top1_difference'] = diff
    out['seed_spread'] = spread
    # with one seed there is no spread: only "not lower" counts
    out['top1_ok'] = bool(diff >= -(spread if spread == spread else 0.0))
    out['wall_ratio_median'] = statistics.median(r['wall_ratio'] for r in runs)
    out['wall_ratio_of_means'] = out['ours']['wall_mean'] / out['timm']['wall_mean']
    out['cpu_ratio_median'] = statistics.median(r['cpu_ratio'] for r in runs)
    out['cpu_ratio_of_means'] = out['ours']['cpu_mean'] / out['timm']['cpu_mean']
    out['wall_ok'] = bool(out['wall_ratio_median'] <= TARGET_WALL_RATIO)
    out['flag_differences'] = sorted({k for r in runs for k in r.get('flag_differences', {})})
    return out


def format_table(runs: Sequence[Dict[str, Any]], summary: Dict[str, Any]) -> str:
    """Per-seed rows, the mean +- std row and the verdict lines."""
    rows = [[str(r['seed']), fmt(r['timm']['top1']), fmt(r['ours']['top1']),
             fmt(r['timm']['wall_seconds'], '.1f'), fmt(r['ours']['wall_seconds'], '.1f'), fmt(r['wall_ratio']),
             fmt(r['timm']['cpu_seconds'], '.1f'), fmt(r['ours']['cpu_seconds'], '.1f'), fmt(r['cpu_ratio']),
             fmt(r['timm'].get('load_before'), '.1f')] for r in runs]
    t, o = summary['timm'], summary['ours']
    rows.append([f'mean +- std ({len(runs)})', f'{fmt(t["top1_mean"])} +- {fmt(t["top1_std"])}',
                 f'{fmt(o["top1_mean"])} +- {fmt(o["top1_std"])}', fmt(t['wall_mean'], '.1f'),
                 fmt(o['wall_mean'], '.1f'), fmt(summary['wall_ratio_median']), fmt(t['cpu_mean'], '.1f'),
                 fmt(o['cpu_mean'], '.1f'), fmt(summary['cpu_ratio_median']), ''])
    table = text_table(['seed', 'timm top-1', 'ours top-1', 'timm wall s', 'ours wall s', 'wall ratio',
                        'timm CPU s', 'ours CPU s', 'CPU ratio', 'load'], rows)
    lines = [
        table,
        f'top-1: ours - timm = {summary["top1_difference"]:+.2f} points; seed spread (larger std) '
        f'{fmt(summary["seed_spread"])}: ' + ('not lower beyond the spread' if summary['top1_ok']
                                            else 'LOWER beyond the spread'),
        f'time ours/timm: wall {fmt(summary["wall_ratio_median"])} (median of seeds; ratio of means '
        f'{fmt(summary["wall_ratio_of_means"])}), CPU {fmt(summary["cpu_ratio_median"])} (ratio of means '
        f'{fmt(summary["cpu_ratio_of_means"])}); target wall <= {TARGET_WALL_RATIO}: '
        + ('met' if summary['wall_ok'] else 'NOT met'),
        'ratio column: the median of the per-seed ratios; load: 1-minute load average before the timm run',
    ]
    if summary['flag_differences']:
        lines.append('arguments that resolved differently in the two args.yaml: '
                     + ', '.join(summary['flag_differences']))
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 2)[2].split('\n\nReported')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--timm-train', default=None, metavar='PATH', help="timm's train.py (required unless --summarize)")
    p.add_argument('--seed', type=int, nargs='+', default=[0, 1, 2, 3, 4], help='seeds (default: 0 1 2 3 4)')
    p.add_argument('--json', default=None, metavar='FILE', help='write the per-seed results and the summary')
    p.add_argument('--summarize', default=None, metavar='FILE', help='print the table of a recorded JSON and exit')
    p.add_argument('--set', nargs='+', default=[], metavar='KEY=VALUE',
                   help='override a SETTING entry for both scripts, e.g. epochs=2 img_size=64 (default flags above)')
    p.add_argument('--image-px', type=int, default=None, help='side of the PNG files (default 32; a multiple of 8)')
    p.add_argument('--threads', type=int, default=None,
                   help='OMP_NUM_THREADS for both scripts (default: unset, torch uses every core)')
    p.add_argument('--timeout', type=float, default=None, help='seconds a single run may take')
    p.add_argument('--quick', action='store_true', help='tiny folder, 1 epoch: a smoke run, numbers without meaning')
    p.add_argument('--runs-dir', default=None, metavar='DIR',
                   help='keep the image folder, runs and logs here (default: a temporary folder, removed)')
    return p


def setting_from(args: argparse.Namespace) -> Dict[str, Any]:
    """SETTING (or QUICK_SETTING) with the --set overrides, typed like the defaults."""
    setting = dict(QUICK_SETTING if args.quick else SETTING)
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise UserError(f'--set {item}: expected KEY=VALUE')
        old = setting.get(key)
        setting[key] = type(old)(value) if isinstance(old, (int, float)) and not isinstance(old, bool) else value
    return setting


def bench_env(threads: Optional[int]) -> Dict[str, str]:
    """The environment of both scripts: this one, offline Hugging Face, unbuffered output."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', PYTHONUNBUFFERED='1')
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.summarize:
            path = Path(args.summarize)
            if not path.is_file():
                raise UserError(f'--summarize {path}: no such file')
            recorded = json.loads(path.read_text())
            print(format_table(recorded['runs'], summarize(recorded['runs'])))
            return 0
        if not args.timm_train:
            raise UserError("--timm-train PATH: timm's train.py is required (nothing is downloaded)")
        timm_train = Path(args.timm_train).resolve()
        if not timm_train.is_file():
            raise UserError(f'--timm-train {args.timm_train}: no such file')
        if args.threads is not None and args.threads < 1:
            raise UserError(f'--threads {args.threads}: must be >= 1')
        if args.json is not None and not Path(args.json).resolve().parent.is_dir():
            raise UserError(f'--json {args.json}: its folder does not exist')
        setting = setting_from(args)
        folder = dict(QUICK_FOLDER if args.quick else FOLDER)
        if args.image_px is not None:
            folder['image_px'] = args.image_px
        with work_folder(args.runs_dir, 'vs_timm_') as work:
            data_dir = work / 'digits'
            counts = build_image_folder(data_dir, **folder)
            env = bench_env(args.threads)
            runs = []
            for i, seed in enumerate(args.seed):
                runs.append(run_seed(timm_train, data_dir, work, setting, seed, timm_first=i % 2 == 0, env=env,
                                     timeout=args.timeout))
                summary = summarize(runs)
                if args.json:  # after every seed, so an interrupted benchmark keeps what it finished
                    write_json(Path(args.json), {
                        'setting': setting, 'folder': {**folder, 'images': counts}, 'threads': args.threads,
                        'timm_train': str(timm_train), 'cpu_count': os.cpu_count(), 'quick': bool(args.quick),
                        'versions': {'timm': timm.__version__, 'torch': torch.__version__},
                        'runs': runs, 'summary': summary})
            print()
            print(format_table(runs, summarize(runs)))
    except UserError as e:
        print(f'vs_timm.py: error: {e}', file=sys.stderr)
        return 2
    if args.json:
        print(f'json: {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
