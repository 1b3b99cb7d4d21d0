"""``timm-multilabel annotate``: write top-K label maps for a folder of images, or a Hugging Face
image dataset, with any timm model.

    timm-multilabel annotate --model tf_efficientnet_l2.ns_jft_in1k_475 --pretrained \\
        --data-dir /data/imagenet/train --output relabel-l2 --topk 5 --dtype float16
    timm-multilabel annotate --model ... --dataset hfds/ORG/NAME --split train --output maps

The images are listed recursively and sorted by image id (path without extension); shard s of
the output holds images ``s * shard_size ...`` of that list. Shards are written atomically on a
background thread while the next batches run, so a shard file that exists is complete and
``--resume`` redoes only the missing ones. Under ``accelerate launch`` the missing shards are
dealt out to the processes (each shard to exactly one); the main process writes the card when
all are done.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from timm_multilabel.errors import UserError
from .maps import MAP_DTYPES, read_class_names_file
from .writer import (
    CARD_FILE, RUN_FILE, ShardWriter, list_shards, read_run_plan, remove_map_files, shard_name,
    write_dataset_card, write_run_plan, ids_fingerprint, push_maps,
)

_logger = logging.getLogger(__name__)

# plan entries that must match for --resume (data_dir may move, batch size/workers may change)
_RESUME_KEYS = ('model', 'weights', 'img_size', 'topk', 'dtype', 'num_classes', 'map_size', 'shard_size',
                'num_images', 'num_shards', 'ids_sha256')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('annotator')
    g.add_argument('--model', required=True, help='timm model name (the machine annotator)')
    w = g.add_mutually_exclusive_group()
    w.add_argument('--pretrained', action='store_true', help="load timm's pretrained weights")
    w.add_argument('--pretrained-path', metavar='FILE', default=None,
                   help='local weights: .safetensors or .pt/.pth state dict (read with weights_only=True)')
    g.add_argument('--img-size', type=int, default=None, metavar='N',
                   help="square input size; the whole image is resized to N x N (default: the model's)")
    g.add_argument('--topk', type=int, default=5, metavar='K', help='classes kept per map cell (default 5)')
    g.add_argument('--dtype', choices=MAP_DTYPES, default='float16', help='score storage (default float16)')
    g.add_argument('--class-names', metavar='FILE', default=None,
                   help='text file, one class name per line (default: ImageNet names for ImageNet heads)')
    d = parser.add_argument_group('data and output')
    d.add_argument('--data-dir', default=None, metavar='DIR',
                   help='folder of images, any layout, searched recursively; with --dataset, as train.py\'s '
                        '--data-dir (the datasets cache folder for hfds/NAME)')
    d.add_argument('--dataset', default='', metavar='NAME',
                   help="'' (default): the images under --data-dir; else a dataset as train.py's --dataset, "
                        "e.g. hfds/NAME for a Hugging Face image dataset (Hub id or local folder), keyed by "
                        "the same image ids train.py uses (its image_id column, else id, else the row)")
    d.add_argument('--split', default='train', metavar='NAME', help='split of --dataset (default train)')
    d.add_argument('--output', required=True, metavar='DIR', help='label-map dataset folder to write')
    d.add_argument('--limit', type=int, default=None, metavar='N', help='annotate only the first N images (by id)')
    d.add_argument('--shard-size', type=int, default=10000, metavar='N', help='maps per Parquet shard (default 10000)')
    d.add_argument('--resume', action='store_true', help='continue an interrupted run in --output')
    d.add_argument('--overwrite', action='store_true', help='replace the label maps already in --output')
    d.add_argument('--license', default=None, help='license recorded in the dataset card')
    d.add_argument('--push-to-hub', metavar='REPO_ID', default=None, help='upload the folder as a Hub dataset repo')
    d.add_argument('--private', action='store_true', help='create the Hub repo private')
    p = parser.add_argument_group('speed')
    p.add_argument('--batch-size', type=int, default=64, metavar='N', help='images per forward pass (default 64)')
    p.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), metavar='N',
                   help='DataLoader worker processes decoding images')


def _check_args(args) -> None:
    for name in ('topk', 'batch_size', 'shard_size'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1')
    if args.workers < 0:
        raise UserError('--workers must be >= 0')
    if args.limit is not None and args.limit < 1:
        raise UserError('--limit must be >= 1')
    if not args.data_dir and not args.dataset:
        raise UserError('give --data-dir (a folder of images) or --dataset (e.g. hfds/NAME)')
    if args.resume and args.overwrite:
        raise UserError('give either --resume or --overwrite, not both')
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f'--output {args.output} is a file, not a folder')


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _weights_label(args, model) -> str:
    if args.pretrained_path:
        return f'{os.path.basename(args.pretrained_path)} (sha256 {_file_sha256(args.pretrained_path)[:16]})'
    if args.pretrained:
        cfg = getattr(model, 'pretrained_cfg', {}) or {}
        return f'timm pretrained: {cfg.get("hf_hub_id") or cfg.get("architecture")}' + (
            f' ({cfg["tag"]})' if cfg.get('tag') else '')
    return 'random init (no pretrained weights)'


def _class_names(path: Optional[str], model, num_classes: int) -> Optional[List[str]]:
    if path:
        return read_class_names_file(path, num_classes)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(model)
        if subset:
            return list(ImageNetInfo(subset).label_descriptions())
    except Exception:  # noqa: BLE001 -- names are optional
        pass
    return None


def _plan_action(output: str, plan: Dict[str, Any], resume: bool, overwrite: bool) -> str:
    """'fresh' | 'resume' | 'overwrite' for ``output``; raises before anything is written."""
    if not os.path.isdir(output) or not os.listdir(output):
        return 'fresh'
    if overwrite:
        return 'overwrite'
    old = read_run_plan(output)
    shards = list_shards(output)
    has_card = os.path.exists(os.path.join(output, CARD_FILE))
    if not resume:
        what = 'label maps' if (old or shards or has_card) else 'files'
        raise UserError(f'--output {output} already holds {what}; pass --resume to continue that run '
                        f'or --overwrite to replace it')
    if old is None:
        if shards or has_card:
            raise UserError(f'--resume: {output} holds label maps without a run plan ({RUN_FILE}); '
                            f'use --overwrite to start again')
        return 'fresh'
    for key in _RESUME_KEYS:
        if old.get(key) != plan.get(key):
            raise UserError(f'--resume: {output} was started with {key}={old.get(key)!r}, this run has '
                            f'{plan.get(key)!r}; use --overwrite to start again')
    expected = {os.path.basename(shard_name(s, plan['num_shards'])) for s in range(plan['num_shards'])}
    stray = [p for p in shards if os.path.basename(p) not in expected]
    if stray:
        raise UserError(f'--resume: {stray[0]} does not belong to this run; use --overwrite to start again')
    return 'resume'


def _check_shard(path: str, expected_rows: int) -> None:
    import pyarrow.parquet as pq
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as e:  # noqa: BLE001
        raise UserError(f'unreadable shard {path} ({type(e).__name__}); delete it and run with --resume') from e
    if rows != expected_rows:
        raise UserError(f'shard {path} holds {rows} maps, {expected_rows} expected; delete it and run with --resume')


def _dataset_listing(args) -> Tuple[List[str], 'torch.utils.data.Dataset']:
    """Image ids of ``--dataset`` sorted, and the dataset in that order (items ``(PIL image, ...)``)."""
    from torch.utils.data import IterableDataset, Subset
    from timm_multilabel.data import create_dataset, get_image_ids

    dataset = create_dataset(args.dataset, root=args.data_dir, split=args.split, is_training=False)
    if isinstance(dataset, IterableDataset):
        raise UserError(f'--dataset {args.dataset}: a streaming (iterable) dataset has no stable order to resume '
                        f'by; use a map-style one (hfds/NAME, a folder)')
    dataset.transform = None
    ids = get_image_ids(dataset)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    for a, b in zip(order, order[1:]):
        if ids[a] == ids[b]:
            raise UserError(f'--dataset {args.dataset}: rows {min(a, b)} and {max(a, b)} share the image id '
                            f'{ids[a]!r}; label maps need one id per image')
    if args.limit:
        order = order[:args.limit]
    return [ids[i] for i in order], Subset(dataset, order)


def annotate_images(
        annotator,
        image_ids: Sequence[str],
        paths: Union[Sequence[str], 'torch.utils.data.Dataset'],
        output: str,
        shards: Sequence[int],
        num_shards: int,
        shard_size: int,
        dtype: str,
        batch_size: int = 64,
        workers: int = 0,
        device: Optional[torch.device] = None,
        progress: bool = True,
) -> int:
    """Annotate the images of ``shards`` (indices into the sorted list) and write those shards;
    returns the number of images annotated. ``paths`` holds the image files in ``image_ids``
    order, or is a dataset in that order whose items are ``(PIL image, ...)``."""
    from torch.utils.data import DataLoader, Dataset, Subset
    from tqdm import tqdm
    from .image_folder import DatasetImages, ImageListDataset

    n = len(image_ids)
    segments = [(s, s * shard_size, min(n, (s + 1) * shard_size)) for s in shards]
    order = [i for _, a, b in segments for i in range(a, b)]
    if not order:
        return 0
    device = device or next(annotator.parameters()).device
    if isinstance(paths, Dataset):
        source = DatasetImages(Subset(paths, order), annotator.transform, annotator.img_size,
                               ids=[image_ids[i] for i in order])
    else:
        source = ImageListDataset([paths[i] for i in order], annotator.transform, annotator.img_size)
    loader = DataLoader(
        source,
        batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == 'cuda',
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
    writer = ShardWriter(output, num_shards, dtype, annotator.num_classes)
    seg_i, buf_s, buf_c, filled = 0, [], [], 0
    bar = tqdm(total=len(order), unit='img', desc='annotate', disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode():
            for images, _, errors in loader:
                bad = [e for e in errors if e]
                if bad:
                    raise UserError(bad[0])
                scores, classes = annotator(images.to(device, non_blocking=True))
                scores, classes = scores.cpu(), classes.to(torch.int32).cpu()
                off = 0
                while off < len(scores):
                    s, a, b = segments[seg_i]
                    take = min(b - a - filled, len(scores) - off)
                    buf_s.append(scores[off:off + take])
                    buf_c.append(classes[off:off + take])
                    filled += take
                    off += take
                    if filled == b - a:
                        writer.submit(s, image_ids[a:b], torch.cat(buf_s), torch.cat(buf_c))
                        seg_i, buf_s, buf_c, filled = seg_i + 1, [], [], 0
                bar.update(len(images))
        writer.close()
    finally:
        bar.close()
        if writer._thread.is_alive():  # interrupted: let the queued shards finish, keep what is done
            try:
                writer.close()
            except BaseException:  # noqa: BLE001 -- the first error is the one reported
                pass
    return len(order)


def run(args) -> int:
    from accelerate import PartialState
    from .annotate import create_annotator
    from .image_folder import list_images

    _check_args(args)
    annotator = create_annotator(args.model, pretrained=args.pretrained, pretrained_path=args.pretrained_path,
                                 topk=args.topk, img_size=args.img_size)
    if args.dataset:
        image_ids, paths = _dataset_listing(args)
    else:
        listing = list_images(args.data_dir)
        if args.limit:
            listing = listing[:args.limit]
        image_ids = [i for i, _ in listing]
        paths = [p for _, p in listing]
    class_names = _class_names(args.class_names, annotator.model, annotator.num_classes)

    state = PartialState(cpu=not torch.cuda.is_available())
    annotator.to(state.device)
    num_shards = math.ceil(len(image_ids) / args.shard_size)
    plan = {
        'model': args.model,
        'weights': _weights_label(args, annotator.model),
        'img_size': annotator.img_size,
        'topk': args.topk,
        'dtype': args.dtype,
        'num_classes': annotator.num_classes,
        'map_size': list(annotator.map_size),
        'shard_size': args.shard_size,
        'num_images': len(image_ids),
        'num_shards': num_shards,
        'ids_sha256': ids_fingerprint(image_ids),
        'data_dir': os.path.abspath(args.data_dir) if args.data_dir else None,
        'dataset': args.dataset or None,
        'split': args.split if args.dataset else None,
    }
    if plan['weights'].startswith('random init'):
        _logger.warning('annotate: %s has no pretrained weights (give --pretrained or --pretrained-path); '
                        'its maps are noise', args.model)
    action = _plan_action(args.output, plan, args.resume, args.overwrite)  # every rank, read-only
    state.wait_for_everyone()  # every rank has judged --output before the main process changes it

    if state.is_main_process:
        os.makedirs(args.output, exist_ok=True)
        remove_map_files(args.output, everything=action == 'overwrite')
        write_run_plan(args.output, plan)
    state.wait_for_everyone()
    todo = [s for s in range(num_shards) if not os.path.exists(os.path.join(args.output, shard_name(s, num_shards)))]
    state.wait_for_everyone()  # everyone has listed the missing shards before anyone writes one
    mine = todo[state.process_index::state.num_processes]
    if state.is_main_process:
        _logger.info('annotate: %d images, %d of %d shards to write%s', len(image_ids), len(todo), num_shards,
                     f' on {state.num_processes} processes' if state.num_processes > 1 else '')
    annotate_images(annotator, image_ids, paths, args.output, mine, num_shards, args.shard_size, args.dtype,
                    batch_size=args.batch_size, workers=args.workers, device=state.device,
                    progress=state.is_local_main_process)
    state.wait_for_everyone()

    if state.is_main_process:
        for s in range(num_shards):
            a, b = s * args.shard_size, min(len(image_ids), (s + 1) * args.shard_size)
            _check_shard(os.path.join(args.output, shard_name(s, num_shards)), b - a)
        c = annotator.data_config
        card = write_dataset_card(args.output, {
            'annotator': args.model, 'weights': plan['weights'], 'input_size': annotator.img_size,
            'map_size': annotator.map_size, 'topk': args.topk, 'dtype': args.dtype,
            'num_classes': annotator.num_classes, 'class_names': class_names, 'license': args.license,
            'mean': list(c['mean']), 'std': list(c['std']), 'interpolation': c['interpolation'],
            'source': f'timm-multilabel annotate --model {args.model}', 'repo_id': args.push_to_hub,
        })
        _logger.info('annotate: wrote %s and %d shards in %s', os.path.basename(card), num_shards, args.output)
        if args.push_to_hub:
            url = push_maps(args.output, args.push_to_hub, private=args.private)
            _logger.info('annotate: pushed to %s', url)
    return 0
