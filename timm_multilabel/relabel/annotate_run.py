"""An annotate run: images -> a label-map dataset folder, resumable and shared out to processes.

The images are sorted by image id (path without extension); shard s of the output holds images
``s * shard_size ...`` of that list. Shards are written atomically on a background thread while
the next batches run, so a shard file that exists is complete and a resumed run redoes only the
missing ones. Under ``accelerate launch`` the missing shards are dealt out to the processes (each
shard to exactly one); the main process writes the card when all are done. The run plan in the
folder records what a resumed run must match, and the shard layout (``writer.LAYOUT_*``): a run
resumed on a folder started in the flat layout (a plan without ``layout``, from an older
timm-multilabel) continues in it, so that the folder keeps one layout.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow.parquet as pq
import torch
from accelerate import PartialState
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from tqdm import tqdm

from timm_multilabel.data import create_dataset, get_image_ids
from timm_multilabel.data.images import BadImageError
from timm_multilabel.errors import UserError
from timm_multilabel.fileio import LOCK_NAME, FolderLock
from .annotate import LabelMapAnnotator
from .image_folder import DatasetImages, ImageListDataset, list_images
from .maps import read_class_names_file
from .writer import (
    CARD_FILE, LAYOUT_FLAT, LAYOUT_NAMES, LAYOUT_VERSION, RUN_FILE, ShardWriter, folder_layout, ids_fingerprint,
    list_shards, push_maps, read_run_plan, remove_map_files, shard_name, write_dataset_card, write_run_plan,
)

__all__ = [
    'RESUME_KEYS', 'list_images_to_annotate', 'weights_label', 'default_class_names', 'plan_action',
    'check_shard', 'annotate_images', 'annotate_dataset',
]

_logger = logging.getLogger(__name__)

# plan entries that must match for a resume (data_dir may move, batch size/workers may change)
RESUME_KEYS = ('model', 'weights', 'img_size', 'topk', 'dtype', 'num_classes', 'map_size', 'shard_size',
               'num_images', 'num_shards', 'ids_sha256')

Images = Union[Sequence[str], Dataset]


def _dataset_listing(name: str, data_dir: Optional[str], split: str, limit: Optional[int]) -> Tuple[List[str], Subset]:
    dataset = create_dataset(name, root=data_dir, split=split, is_training=False)
    if isinstance(dataset, IterableDataset):
        raise UserError(f'--dataset {name}: a streaming (iterable) dataset has no stable order to resume '
                        f'by; use a map-style one (hfds/NAME, a folder)')
    dataset.transform = None
    ids = get_image_ids(dataset)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    for a, b in zip(order, order[1:]):
        if ids[a] == ids[b]:
            raise UserError(f'--dataset {name}: rows {min(a, b)} and {max(a, b)} share the image id '
                            f'{ids[a]!r}; label maps need one id per image')
    if limit:
        order = order[:limit]
    return [ids[i] for i in order], Subset(dataset, order)


def list_images_to_annotate(
        data_dir: Optional[str], dataset: str = '', split: str = 'train', limit: Optional[int] = None,
) -> Tuple[List[str], Images]:
    """Image ids sorted, and the images in that order: the files under ``data_dir`` (``dataset`` '')
    or a dataset as train.py's ``--dataset`` (items ``(PIL image, ...)``, keyed by train.py's ids);
    the first ``limit`` only when given."""
    if dataset:
        return _dataset_listing(dataset, data_dir, split, limit)
    listing = list_images(data_dir)
    if limit:
        listing = listing[:limit]
    return [i for i, _ in listing], [p for _, p in listing]


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def weights_label(model: nn.Module, pretrained: bool = False, pretrained_path: Optional[str] = None) -> str:
    """What the annotator's weights are, as recorded in the run plan and the card."""
    if pretrained_path:
        return f'{os.path.basename(pretrained_path)} (sha256 {_file_sha256(pretrained_path)[:16]})'
    if pretrained:
        cfg = getattr(model, 'pretrained_cfg', {}) or {}
        return f'timm pretrained: {cfg.get("hf_hub_id") or cfg.get("architecture")}' + (
            f' ({cfg["tag"]})' if cfg.get('tag') else '')
    return 'random init (no pretrained weights)'


def default_class_names(path: Optional[str], model: nn.Module, num_classes: int) -> Optional[List[str]]:
    """Class names from the file ``path``, else ImageNet's for an ImageNet head, else None."""
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


def plan_action(output: str, plan: Dict[str, Any], resume: bool, overwrite: bool) -> str:
    """'fresh' | 'resume' | 'overwrite' for ``output``; raises before anything is written.

    On 'resume' ``plan['layout']`` becomes the layout the run was started in (its plan's
    ``layout``, ``LAYOUT_FLAT`` for a plan written before layouts); shards already there in
    another layout are refused."""
    if not os.path.isdir(output) or not [n for n in os.listdir(output) if n != LOCK_NAME]:
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
    for key in RESUME_KEYS:
        if old.get(key) != plan.get(key):
            raise UserError(f'--resume: {output} was started with {key}={old.get(key)!r}, this run has '
                            f'{plan.get(key)!r}; use --overwrite to start again')
    expected = {os.path.basename(shard_name(s, plan['num_shards'])) for s in range(plan['num_shards'])}
    stray = [p for p in shards if os.path.basename(p) not in expected]
    if stray:
        raise UserError(f'--resume: {stray[0]} does not belong to this run; use --overwrite to start again')
    layout = old.get('layout', LAYOUT_FLAT)
    if layout not in LAYOUT_NAMES:
        raise UserError(f'--resume: {output} was started with layout={layout!r}, which this timm-multilabel cannot '
                        f'write; use --overwrite to start again')
    have = folder_layout(output, shards)
    if have is not None and have != layout:
        raise UserError(f'--resume: the shards in {output} are in {LAYOUT_NAMES[have]}, its run plan says '
                        f'{LAYOUT_NAMES[layout]}; use --overwrite to start again')
    if layout != plan.get('layout', LAYOUT_VERSION):
        _logger.info('annotate: %s was started in %s; continuing in it', output, LAYOUT_NAMES[layout])
    plan['layout'] = layout
    return 'resume'


def check_shard(path: str, expected_rows: int) -> None:
    """Raise if the shard at ``path`` is unreadable or does not hold ``expected_rows`` maps."""
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as e:  # noqa: BLE001
        raise UserError(f'unreadable shard {path} ({type(e).__name__}); delete it and run with --resume') from e
    if rows != expected_rows:
        raise UserError(f'shard {path} holds {rows} maps, {expected_rows} expected; delete it and run with --resume')


def annotate_images(
        annotator: LabelMapAnnotator,
        image_ids: Sequence[str],
        paths: Images,
        output: str,
        shards: Sequence[int],
        num_shards: int,
        shard_size: int,
        dtype: str,
        batch_size: int = 64,
        workers: int = 0,
        device: Optional[torch.device] = None,
        progress: bool = True,
        layout: int = LAYOUT_VERSION,
) -> int:
    """Annotate the images of ``shards`` (indices into the sorted list) and write those shards
    in ``layout``; returns the number of images annotated. ``paths`` holds the image files in
    ``image_ids`` order, or is a dataset in that order whose items are ``(PIL image, ...)``."""
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
    writer = ShardWriter(output, num_shards, dtype, annotator.num_classes, layout=layout)
    seg_i, buf_s, buf_c, filled = 0, [], [], 0
    bar = tqdm(total=len(order), unit='img', desc='annotate', disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode():
            for images, _, errors in loader:
                bad = [e for e in errors if e]
                if bad:
                    raise BadImageError(bad[0])
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


def annotate_dataset(
        annotator: LabelMapAnnotator,
        image_ids: Sequence[str],
        images: Images,
        output: str,
        model_name: str,
        weights: str,
        dtype: str = 'float16',
        shard_size: int = 10000,
        resume: bool = False,
        overwrite: bool = False,
        class_names: Optional[Sequence[str]] = None,
        license: Optional[str] = None,
        push_to_hub: Optional[str] = None,
        private: bool = False,
        batch_size: int = 64,
        workers: int = 0,
        source: Optional[Dict[str, Any]] = None,
) -> None:
    """Write the label maps of ``images`` (sorted by ``image_ids``) and the dataset card to ``output``.

    Runs on every process of an ``accelerate launch`` (each writes its share of the missing shards).

    Args:
        annotator: the machine annotator; moved to this process's device.
        model_name, weights: what the card and the run plan record as the annotator.
        resume: continue the interrupted run in ``output`` (its plan must match this one).
        overwrite: replace the label maps already in ``output``.
        push_to_hub: upload the finished folder to this dataset repo.
        source: where the images come from (``data_dir``, ``dataset``, ``split``), recorded in the plan.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    annotator.to(state.device)
    num_shards = math.ceil(len(image_ids) / shard_size)
    plan = {
        'model': model_name,
        'weights': weights,
        'img_size': annotator.img_size,
        'topk': annotator.topk,
        'dtype': dtype,
        'num_classes': annotator.num_classes,
        'map_size': list(annotator.map_size),
        'shard_size': shard_size,
        'num_images': len(image_ids),
        'num_shards': num_shards,
        'ids_sha256': ids_fingerprint(image_ids),
        'layout': LAYOUT_VERSION,
        **(source or {}),
    }
    if weights.startswith('random init'):
        _logger.warning('annotate: %s has no pretrained weights (give --pretrained or --pretrained-path); '
                        'its maps are noise', model_name)
    action = plan_action(output, plan, resume, overwrite)  # every rank, read-only
    state.wait_for_everyone()  # every rank has judged the output before the main process changes it

    output_lock = FolderLock(output, '--output')
    if state.is_main_process:
        output_lock.acquire()  # creates the folder; a second annotate writing there is refused
        remove_map_files(output, everything=action == 'overwrite')
        write_run_plan(output, plan)
    state.wait_for_everyone()
    todo = [s for s in range(num_shards) if not os.path.exists(os.path.join(output, shard_name(s, num_shards)))]
    state.wait_for_everyone()  # everyone has listed the missing shards before anyone writes one
    mine = todo[state.process_index::state.num_processes]
    if state.is_main_process:
        _logger.info('annotate: %d images, %d of %d shards to write%s', len(image_ids), len(todo), num_shards,
                     f' on {state.num_processes} processes' if state.num_processes > 1 else '')
    annotate_images(annotator, image_ids, images, output, mine, num_shards, shard_size, dtype,
                    batch_size=batch_size, workers=workers, device=state.device,
                    progress=state.is_local_main_process, layout=plan['layout'])
    state.wait_for_everyone()

    if state.is_main_process:
        for s in range(num_shards):
            a, b = s * shard_size, min(len(image_ids), (s + 1) * shard_size)
            check_shard(os.path.join(output, shard_name(s, num_shards)), b - a)
        c = annotator.data_config
        card = write_dataset_card(output, {
            'annotator': model_name, 'weights': weights, 'input_size': annotator.img_size,
            'map_size': annotator.map_size, 'topk': annotator.topk, 'dtype': dtype,
            'num_classes': annotator.num_classes, 'class_names': class_names, 'license': license,
            'mean': list(c['mean']), 'std': list(c['std']), 'interpolation': c['interpolation'],
            'source': f'timm-multilabel annotate --model {model_name}', 'repo_id': push_to_hub,
        })
        _logger.info('annotate: wrote %s and %d shards in %s', os.path.basename(card), num_shards, output)
        if push_to_hub:
            url = push_maps(output, push_to_hub, private=private)
            _logger.info('annotate: pushed to %s', url)
    output_lock.release()
