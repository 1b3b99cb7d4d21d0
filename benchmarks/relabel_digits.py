"""ReLabel on digits-main: the paper's Table 2 (factor analysis) at toy scale, the whole pipeline.

    python benchmarks/relabel_digits.py [--seed S] [--json FILE] [--quick] [--jobs N] [--out-dir DIR]
                                        [--rows ROW,...] [--annotate-api]
    python benchmarks/relabel_digits.py --summarize seed1.json seed2.json seed3.json [--json FILE]

The data (``timm_multilabel.data.DigitsMain``, ``train.py --dataset digits-main``) is built to be
ImageNet-like where it matters for ReLabel: a 4x4-cell canvas whose *main object* (a 2x2 block of
four instances of one digit, a quarter of the canvas, anywhere) gives the single label, small
distractor digits in the other cells (each with probability 0.5), and random-resized crops
(scale 0.08-1) of which ~5% miss the main object entirely and ~40% hold less than half of it.
Top-1 is measured against the main digit, mAP against every digit present.

Pipeline, for one seed:

1. **Oracle maps** from the known cells (``write_oracle_maps``: logit 16 for the cell's digit, 0
   elsewhere, empty cells neutral).
2. **Machine annotator**: a ``test_resnet`` trained on *single* 8x8 digits of the train pool only
   (``train_digit_classifier``), saved as a timm model folder, run fully convolutionally over the
   training canvases (resized to 128 px: one 32-px window per cell, a 4x4 map), top-5 stored as
   float16, with ``timm-multilabel annotate --model local-dir:DIR --pretrained --img-size 128`` on the
   canvases exported as PNGs (``--annotate-api``: the same maps in-process, ``write_machine_maps``).
3. **Training runs** of ``train.py`` (one subprocess each, one thread, ``--jobs`` at a time), the same
   model, data, seed and schedule, differing only in the targets (``--relabel-maps``, ``--relabel-mode``)
   and in ``--cutmix``:

   ============================  ==================================================================
   ``baseline``                  the single (main-object) labels
   ``relabel``                   machine maps, RoIAlign over the crop (localized multi-labels)
   ``relabel-local-hard``        argmax of that (localized single labels)
   ``relabel-global``            machine maps pooled over the whole image (global multi-labels)
   ``relabel-global-hard``       argmax of that (global single labels)
   ``relabel-oracle``            oracle maps, localized multi-labels
   ``<row>+cutmix``              each of the above with CutMix (alpha 1)
   ============================  ==================================================================

Reported per row: the *last* epoch's test metrics (no checkpoint is chosen on the test split).
``maps`` reports what the targets look like (cell accuracy of the map's top class; whole-image
and per-crop pooled targets against the main digit). The configuration (``CONFIG``) was fixed on
the development seed 0; report other seeds. ``--quick`` runs a tiny version for smoke tests (its
numbers mean nothing).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from _bench import QUIET_RUN, fmt, run_python, run_train, text_table, train_flags, work_folder, write_json
from timm_multilabel.errors import UserError

DEV_SEED = 0
# The paper's Table 2 (ResNet-50, ImageNet top-1), and Table 5 for ReLabel + CutMix.
PAPER_TABLE2 = {'relabel': 78.9, 'relabel-local-hard': 78.4, 'relabel-global': 78.5,
                'relabel-global-hard': 77.5, 'baseline': 77.5, 'relabel+cutmix': 80.2}
TARGET_TOP1_GAIN = 1.0  # ReLabel top-1 >= baseline + 1 point, mAP not lower

# row -> (maps: None | 'machine' | 'oracle', --relabel-mode)
BASE_ROWS: Dict[str, Any] = {
    'baseline': (None, None),
    'relabel': ('machine', 'local'),
    'relabel-local-hard': ('machine', 'local-hard'),
    'relabel-global': ('machine', 'global'),
    'relabel-global-hard': ('machine', 'global-hard'),
    'relabel-oracle': ('oracle', 'local'),
}
ROWS: List[str] = [r + suffix for suffix in ('', '+cutmix') for r in BASE_ROWS]

# Fixed on the development seed 0 (see README "ReLabel on digits-main"); never tuned on other seeds.
CONFIG: Dict[str, Any] = dict(
    data=dict(train_num_samples=8000, val_num_samples=2000),
    student=dict(model='test_resnet', img_size=32, batch_size=64, epochs=10, lr=2e-3, weight_decay=0.05,
                 warmup_epochs=1, scale=(0.08, 1.0), ratio=(0.75, 1.3333), cutmix=1.0),
    annotator=dict(model_name='test_resnet', img_size=32, epochs=60, context=3, digit_size=(0.85, 1.05),
                   overhang=0.05, blank_prob=0.25, logit_scale=2.5),
    annotate=dict(img_size=128, topk=5, dtype='float16'),
    oracle=dict(logit=16.0, topk=5, dtype='float16'),
)
QUICK_CONFIG: Dict[str, Any] = dict(
    CONFIG,
    data=dict(train_num_samples=128, val_num_samples=64),
    student=dict(CONFIG['student'], batch_size=32, epochs=1, warmup_epochs=0),
    annotator=dict(CONFIG['annotator'], epochs=1),
)


# ------------------------------------------------------------------------------- train.py runs

def common_flags(cfg: Dict[str, Any], seed: int) -> List[str]:
    """train.py flags shared by every row (model, data, seed, schedule, augmentation)."""
    s, d = cfg['student'], cfg['data']
    return train_flags(
        dataset='digits-main', data_dir='.',
        train_num_samples=d['train_num_samples'], val_num_samples=d['val_num_samples'],
        model=s['model'], img_size=s['img_size'], batch_size=s['batch_size'],
        epochs=s['epochs'], opt='adamw', lr=s['lr'], weight_decay=s['weight_decay'],
        warmup_epochs=s['warmup_epochs'], sched_on_updates=True, scale=s['scale'], ratio=s['ratio'],
        hflip=0, color_jitter=0, smoothing=0, crop_pct=1.0, interpolation='bilinear', train_interpolation='bilinear',
        seed=seed, **QUIET_RUN,
    )


def row_flags(row: str, cfg: Dict[str, Any], maps: Dict[str, Path]) -> List[str]:
    """Flags selecting the targets of ``row`` (see ``BASE_ROWS``) and CutMix."""
    base, _, extra = row.partition('+')
    if base not in BASE_ROWS or extra not in ('', 'cutmix'):
        raise UserError(f'unknown row {row!r}; expected one of {", ".join(ROWS)}')
    which, mode = BASE_ROWS[base]
    flags: List[str] = []
    if which is not None:
        flags += ['--relabel-maps', str(maps[which]), '--relabel-mode', mode]
    if extra == 'cutmix':
        flags += ['--cutmix', str(cfg['student']['cutmix']), '--mixup', '0']
    return flags


def train_row(flags: Sequence[str], out_dir: Path, threads: int = 1) -> Dict[str, Any]:
    """Run ``train.py FLAGS`` (see ``_bench.run_train``); return its last-epoch test metrics,
    ``train_seconds``, ``wall_seconds`` and the method train.py recorded."""
    run = run_train(flags, out_dir, threads)
    row = dict(run.metrics)
    row.update(train_seconds=run.summary['train_seconds'], wall_seconds=run.wall_seconds,
               method=run.summary.get('method', {}).get('name'))
    return row


# ------------------------------------------------------------------------------------ maps

def _card_top1(model_dir: Path) -> float:
    from timm_multilabel.hub import card_metrics
    return float(card_metrics(str(model_dir / 'README.md')).get('top1', float('nan')))


def annotate_with_cli(dataset, model_dir: Path, output: Path, image_dir: Path, img_size: int, topk: int,
                      dtype: str) -> Path:
    """``timm-multilabel annotate --model local-dir:MODEL --pretrained`` over the exported canvases."""
    if image_dir.exists():
        shutil.rmtree(image_dir)
    dataset.export_image_folder(str(image_dir))
    run_python(['-m', 'timm_multilabel.cli', 'annotate', '--model', f'local-dir:{model_dir.resolve()}', '--pretrained',
                *train_flags(img_size=img_size, topk=topk, dtype=dtype, data_dir=image_dir, output=output,
                             overwrite=True, workers=0, batch_size=256)], 'annotate')
    return output


def map_stats(maps_dir: Path, dataset, scale=(0.08, 1.0), ratio=(0.75, 1.3333), seed: int = 0,
              fill: float = 0.0) -> Dict[str, float]:
    """What the maps teach, on the training canvases (percent unless noted):

    ``cell_top1``: the map's top class equals the digit drawn in the cell (cells with a digit; maps
    of grid x grid cells only); ``whole_argmax_main`` / ``whole_p_main``: the whole-image pooled
    target's argmax is the main digit / its mean probability (0..1); for one random-resized crop
    per image (the student's sampling): ``crops_missing_main`` (no overlap with the main object),
    ``missing_p_main`` (mean target probability of the main digit on those, 0..1),
    ``covering_p_main`` (same on crops holding the whole main object).
    """
    import numpy as np
    import torch
    from PIL import Image
    from timm_multilabel.data.digits_maps import cell_accuracy
    from timm_multilabel.relabel.pooling import label_pool
    from timm_multilabel.relabel.store import load_label_maps
    from timm_multilabel.relabel.transforms import RandomResizedCropWithBox

    store = load_label_maps(str(maps_dir))
    n = len(dataset)
    scores, classes = store.get_batch(list(dataset.image_ids))
    labels = torch.tensor(np.asarray(dataset.labels), dtype=torch.long)
    out: Dict[str, float] = {}
    if tuple(scores.shape[-2:]) == (dataset.grid, dataset.grid):
        out['cell_top1'] = cell_accuracy(dataset, scores, classes)['digit_cells']
    whole = label_pool(scores, classes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4), dataset.num_classes,
                       fill=fill)
    out['whole_argmax_main'] = float((whole.argmax(1) == labels).float().mean() * 100)
    out['whole_p_main'] = float(whole[torch.arange(n), labels].mean())
    torch.manual_seed(seed)
    import random
    random.seed(seed)
    crop = RandomResizedCropWithBox(8, scale=tuple(scale), ratio=tuple(ratio))
    img = Image.new('RGB', (dataset.image_size, dataset.image_size))
    boxes = torch.stack([crop.crop_with_box(img)[1] for _ in range(n)])
    target = label_pool(scores, classes, boxes, dataset.num_classes, fill=fill)
    p_main = target[torch.arange(n), labels]
    main = torch.tensor([dataset.main_box(i) for i in range(n)])
    ix = (torch.minimum(boxes[:, 2], main[:, 2]) - torch.maximum(boxes[:, 0], main[:, 0])).clamp(min=0)
    iy = (torch.minimum(boxes[:, 3], main[:, 3]) - torch.maximum(boxes[:, 1], main[:, 1])).clamp(min=0)
    covered = ix * iy / ((main[:, 2] - main[:, 0]) * (main[:, 3] - main[:, 1]))
    missing, full = covered <= 0, covered >= 0.999
    out['crops_missing_main'] = float(missing.float().mean() * 100)
    out['missing_p_main'] = float(p_main[missing].mean()) if bool(missing.any()) else float('nan')
    out['covering_p_main'] = float(p_main[full].mean()) if bool(full.any()) else float('nan')
    return out


# ------------------------------------------------------------------------------------ report

def targets(result: Dict[str, Any]) -> Dict[str, Any]:
    gain = result['relabel']['top1'] - result['baseline']['top1']
    map_gain = result['relabel']['mAP'] - result['baseline']['mAP']
    return {'top1_gain': gain, 'mAP_gain': map_gain, 'min_top1_gain': TARGET_TOP1_GAIN,
            'met': bool(gain >= TARGET_TOP1_GAIN and map_gain >= 0)}


def format_table(result: Dict[str, Any]) -> str:
    """Each row's last-epoch test metrics beside the paper's top-1, the maps, the target."""
    title = (f"ReLabel on digits-main, seed {result['seed']}{' (development seed)' if result['seed'] == DEV_SEED else ''}"
             f"{' [quick: numbers mean nothing]' if result.get('quick') else ''}")
    base = result.get('baseline', {})
    rows = []
    for row in ROWS:
        r = result.get(row)
        if not r:
            continue
        delta = f"({r['top1'] - base['top1']:+.2f} top-1 vs baseline)" if base and row != 'baseline' else ''
        rows.append([row, fmt(r['top1']), fmt(r['mAP']), fmt(r['real_acc']), fmt(r['real_f1@0.25']),
                     fmt(r['train_seconds']), fmt(PAPER_TABLE2.get(row)), delta])
    lines = [title, text_table(['row', 'top-1', 'mAP', 'ReaL', 'F1@.25', 'train s', 'paper', ''], rows)]
    for which, s in result.get('maps', {}).items():
        lines.append(f"maps {which:<8} " + '  '.join(f'{k} {fmt(v)}' for k, v in s.items()))
    if 'annotator_top1' in result:
        lines.append(f"annotator: {result['annotator_top1']:.2f}% top-1 on held-out single digits")
    t = result.get('targets')
    if t:
        lines.append(f"target (relabel >= baseline + {t['min_top1_gain']:g} top-1, mAP not lower): "
                     f"{'met' if t['met'] else 'NOT met'} ({t['top1_gain']:+.2f} top-1, {t['mAP_gain']:+.2f} mAP)")
    return '\n'.join(lines)


def summarize(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample std over seeds of each row's top-1 / mAP, and of its top-1 and mAP difference
    to the same seed's baseline (paired): ``{row: {'top1': (mean, std), 'mAP': ..., 'd_top1': ...,
    'd_mAP': ...}, 'seeds': [...]}``."""
    import statistics

    def stats(values: List[float]):
        return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)

    out: Dict[str, Any] = {'seeds': [r['seed'] for r in results]}
    for row in ROWS:
        have = [r for r in results if row in r and 'baseline' in r]
        if not have:
            continue
        out[row] = {
            'top1_per_seed': [r[row]['top1'] for r in have],
            'top1': stats([r[row]['top1'] for r in have]), 'mAP': stats([r[row]['mAP'] for r in have]),
            'd_top1': stats([r[row]['top1'] - r['baseline']['top1'] for r in have]),
            'd_mAP': stats([r[row]['mAP'] - r['baseline']['mAP'] for r in have]),
            'n': len(have),
        }
    return out


def format_summary_markdown(summary: Dict[str, Any]) -> str:
    """README table: mean +- std over seeds, paired differences to the baseline, per-seed top-1."""
    seeds = ', '.join(map(str, summary['seeds']))
    lines = [f'| row (seeds {seeds}) | top-1 | d top-1 | mAP | d mAP | top-1 per seed | paper top-1 |',
             '| --- | ---: | ---: | ---: | ---: | --- | ---: |']
    for row in ROWS:
        s = summary.get(row)
        if not s:
            continue
        cells = [f"{s['top1'][0]:.2f} +- {s['top1'][1]:.2f}", f"{s['d_top1'][0]:+.2f} +- {s['d_top1'][1]:.2f}",
                 f"{s['mAP'][0]:.2f} +- {s['mAP'][1]:.2f}", f"{s['d_mAP'][0]:+.2f} +- {s['d_mAP'][1]:.2f}",
                 ' / '.join(f'{v:.2f}' for v in s.get('top1_per_seed', [])),
                 f"{PAPER_TABLE2[row]:.1f}" if row in PAPER_TABLE2 else '']
        lines.append(f"| {row} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def format_summary(summary: Dict[str, Any]) -> str:
    """The ``--summarize`` table as text: mean +- std over seeds of top-1, mAP and their differences to
    the baseline."""
    rows = [[row] + [f"{summary[row][k][0]:.2f} +- {summary[row][k][1]:.2f}" for k in ('top1', 'mAP', 'd_top1', 'd_mAP')]
            for row in ROWS if summary.get(row)]
    return '\n'.join([f"ReLabel on digits-main, mean +- std over seeds {', '.join(map(str, summary['seeds']))}",
                      text_table(['row', 'top-1', 'mAP', 'd top-1', 'd mAP'], rows)])


# ------------------------------------------------------------------------------------- main

def run_benchmark(seed: int, cfg: Dict[str, Any], work: Path, rows: Sequence[str], jobs: int = 1,
                  via_cli: bool = False, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Build the maps and train every row; the annotator trains while map-free rows already run."""
    from timm_multilabel.data.digits_main import DigitsMain

    work.mkdir(parents=True, exist_ok=True)
    base = common_flags(cfg, seed)
    result: Dict[str, Any] = {'seed': seed, 'dev_seed': DEV_SEED, 'config': cfg}
    maps: Dict[str, Path] = {}
    oracle_ready, machine_ready = threading.Event(), threading.Event()
    failure: List[BaseException] = []
    lock = threading.Lock()

    def make_maps():
        try:
            from timm_multilabel.relabel.digit_maps import write_oracle_maps
            import torch
            torch.set_num_threads(1)
            dataset = DigitsMain('train', num_samples=cfg['data']['train_num_samples'], seed=seed)
            maps['oracle'] = write_oracle_maps(dataset, work / 'maps-oracle', overwrite=True, **cfg['oracle'])
            oracle_ready.set()
            if any(BASE_ROWS[r.partition('+')[0]][0] == 'machine' for r in rows):
                built = build_maps_machine(cfg, seed, work, dataset, via_cli, log)
                maps['machine'] = built['machine']
                result['annotator_top1'] = built['annotator_top1']
        except BaseException as e:  # noqa: BLE001 -- re-raised by the waiting rows
            failure.append(e)
        finally:
            oracle_ready.set()
            machine_ready.set()

    def run_row(row: str) -> None:
        which = BASE_ROWS[row.partition('+')[0]][0]
        if which is not None:
            (oracle_ready if which == 'oracle' else machine_ready).wait()
            if failure:
                raise failure[0]
        flags = base + row_flags(row, cfg, maps)
        log(f'[{row}] train.py {" ".join(flags)}')
        r = train_row(flags, work / f'run-{row.replace("+", "_")}')
        with lock:
            result[row] = r
        log(f'[{row}] top-1 {r["top1"]:.2f}  mAP {r["mAP"]:.2f}  ({r["wall_seconds"]:.0f}s)')

    # map-free and oracle rows first, so they run while the annotator trains
    order = sorted(rows, key=lambda r: {None: 0, 'oracle': 1, 'machine': 2}[BASE_ROWS[r.partition('+')[0]][0]])
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        maker = pool.submit(make_maps)
        futures = [pool.submit(run_row, r) for r in order]
        maker.result()
        for f in futures:
            f.result()
    if failure:
        raise failure[0]

    dataset = DigitsMain('train', num_samples=cfg['data']['train_num_samples'], seed=seed)
    s = cfg['student']
    result['maps'] = {k: map_stats(maps[k], dataset, s['scale'], s['ratio'], seed=seed) for k in maps}
    if 'baseline' in result and 'relabel' in result:
        result['targets'] = targets(result)
    return result


def build_maps_machine(cfg: Dict[str, Any], seed: int, work: Path, dataset, via_cli: bool,
                       log: Callable[[str], None]) -> Dict[str, Any]:
    from timm_multilabel.relabel.digit_maps import write_machine_maps
    from timm_multilabel.training.digit_annotator import train_digit_classifier
    t0 = time.time()
    model_dir = train_digit_classifier(work / 'annotator', seed=seed, **cfg['annotator'])
    top1 = _card_top1(model_dir)
    log(f'[maps] annotator trained in {time.time() - t0:.0f}s: {top1:.2f}% on held-out single digits')
    t0 = time.time()
    a = cfg['annotate']
    if via_cli:
        machine = annotate_with_cli(dataset, model_dir, work / 'maps-machine', work / 'images', **a)
    else:
        machine = write_machine_maps(dataset, model_dir, work / 'maps-machine', overwrite=True, **a)
    log(f'[maps] machine maps ({"annotate CLI" if via_cli else "python API"}) in {time.time() - t0:.0f}s')
    return {'machine': machine, 'annotator': model_dir, 'annotator_top1': top1}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seed', type=int, default=1,
                        help=f'data/model/order seed ({DEV_SEED} is the development seed the design was chosen on)')
    parser.add_argument('--json', type=Path, default=None, help='write the result rows here')
    parser.add_argument('--quick', action='store_true', help='tiny smoke-test settings (numbers mean nothing)')
    parser.add_argument('--jobs', type=int, default=2, help='train.py runs at a time (one thread each)')
    parser.add_argument('--rows', default=','.join(ROWS), help='comma-separated rows to run')
    parser.add_argument('--annotate-api', action='store_true',
                        help='write the machine maps in-process (write_machine_maps) instead of running '
                             '`timm-multilabel annotate` on the exported canvases (same maps, no PNG export)')
    parser.add_argument('--out-dir', type=Path, default=None,
                        help='keep maps, annotator and train.py runs here (default: a temporary folder, removed)')
    parser.add_argument('--summarize', type=Path, nargs='+', default=None, metavar='JSON',
                        help='print the mean +- std table of finished runs (JSON files of this script) and exit')
    parser.add_argument('--markdown', action='store_true', help='with --summarize: print a Markdown table')
    args = parser.parse_args(argv)
    if args.summarize:
        summary = summarize([json.loads(p.read_text()) for p in args.summarize])
        print(format_summary_markdown(summary) if args.markdown else format_summary(summary))
        if args.json:
            write_json(args.json, summary)
        return 0
    rows = [r.strip() for r in args.rows.split(',') if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or args.jobs < 1:
        parser.error(f'unknown rows {unknown}' if unknown else '--jobs must be >= 1')
    cfg = QUICK_CONFIG if args.quick else CONFIG
    start = time.time()
    with work_folder(args.out_dir, 'relabel_digits_') as work:
        result = run_benchmark(args.seed, cfg, work, rows, jobs=args.jobs, via_cli=not args.annotate_api,
                               log=lambda m: print(m, flush=True))
    result['quick'] = bool(args.quick)
    result['annotate_via'] = 'api' if args.annotate_api else 'cli'
    result['wall_seconds'] = time.time() - start
    print(format_table(result))
    print(f'total {result["wall_seconds"]:.0f}s')
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
