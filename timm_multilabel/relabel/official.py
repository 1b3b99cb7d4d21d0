"""The official ReLabel maps (naver-ai/relabel_imagenet) -> a label-map dataset.

The official maps are one file per image at ``<wnid>/<name>.pt``, each a float tensor
``[2, K, H, W]``: the top-K scores, then the class ids stored as floats (K=5, H=W=15 from
EfficientNet-L2 at 475 x 475). Files are read with ``torch.load(weights_only=True)`` only, in
DataLoader workers, and checked (shape, dtype, finite scores, integral class ids in range, one
K/H/W for all); the dataset is built in a hidden staging folder next to the output and moved into
place only when every file passed, so a bad file leaves nothing behind.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from typing import List, Optional, Sequence, Tuple

import torch
from timm.data import ImageNetInfo
from tqdm import tqdm

from timm_multilabel.errors import UserError
from timm_multilabel.fileio import DIR_MODE
from .maps import check_maps, read_class_names_file
from .writer import CARD_FILE, DATA_DIR, list_shards, push_maps, remove_map_files, write_dataset_card, write_shard

__all__ = [
    'OFFICIAL_ANNOTATOR', 'OFFICIAL_WEIGHTS', 'list_official_maps', 'read_official_map', 'import_official_maps',
]

_logger = logging.getLogger(__name__)

OFFICIAL_ANNOTATOR = 'EfficientNet-L2 (official ReLabel maps, naver-ai/relabel_imagenet)'
OFFICIAL_WEIGHTS = 'EfficientNet-L2 Noisy Student (JFT-300M), fine-tuned on ImageNet-1k (Yun et al., CVPR 2021)'


def list_official_maps(src: str) -> List[Tuple[str, str]]:
    """``[(image_id, path)]`` of every ``.pt`` file under ``src``, sorted by image id."""
    if not os.path.isdir(src):
        raise UserError(f'--src folder not found: {src}')
    found = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in filenames:
            if name.endswith('.pt') and not name.startswith('.'):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path[:-3], src).replace(os.sep, '/'), path))
    if not found:
        raise UserError(f'no .pt label maps under {src}')
    return sorted(found)


def read_official_map(path: str, num_classes: int, shape: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One official map file -> ``(scores [K, H, W] float32, classes [K, H, W] int64)``;
    ``UserError`` naming the file if it is not a finite float ``[2, K, H, W]`` tensor with
    integral class ids in ``[0, num_classes)`` (and of ``shape`` = (K, H, W) when given)."""
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 -- includes pickles that would run code
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'{path}: not a tensor file readable with torch.load(weights_only=True) ({first})') from e
    if not isinstance(obj, torch.Tensor):
        raise UserError(f'{path}: holds a {type(obj).__name__}, not a [2, K, H, W] tensor')
    if not obj.is_floating_point():
        raise UserError(f'{path}: tensor of dtype {obj.dtype}, a float tensor [2, K, H, W] is expected')
    if obj.ndim != 4 or obj.shape[0] != 2 or min(obj.shape) < 1:
        raise UserError(f'{path}: tensor of shape {list(obj.shape)}, [2, K, H, W] is expected')
    if shape is not None and tuple(obj.shape[1:]) != tuple(shape):
        raise UserError(f'{path}: tensor of shape {list(obj.shape)}, the other maps are {[2, *shape]}')
    scores, classes = obj[0].float(), obj[1].float()
    try:
        check_maps(scores[None], classes[None], num_classes, where=path)
    except UserError as e:
        raise UserError(str(e).replace(' of image #0', '')) from None
    return scores, classes.long()


class _MapFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], num_classes: int):
        self.paths, self.num_classes = list(paths), num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, read_official_map(self.paths[i], self.num_classes), ''
        except UserError as e:  # reported by the main process, one line
            return i, None, str(e)


def _class_names(path: Optional[str], num_classes: int) -> Optional[List[str]]:
    if path:
        return read_class_names_file(path, num_classes)
    if num_classes == 1000:
        return list(ImageNetInfo('imagenet-1k').label_descriptions())
    return None


def _move_into(staging: str, output: str) -> None:
    """Move the finished dataset in ``staging`` to ``output`` (card last)."""
    if not os.path.exists(output):
        os.replace(staging, output)
        return
    remove_map_files(output, everything=True)
    os.makedirs(os.path.join(output, DATA_DIR), exist_ok=True)
    for path in list_shards(staging):
        os.replace(path, os.path.join(output, DATA_DIR, os.path.basename(path)))
    os.replace(os.path.join(staging, CARD_FILE), os.path.join(output, CARD_FILE))
    shutil.rmtree(staging, ignore_errors=True)


def import_official_maps(
        src: str,
        output: str,
        dtype: str = 'float16',
        num_classes: int = 1000,
        class_names_file: Optional[str] = None,
        annotator: str = OFFICIAL_ANNOTATOR,
        weights: str = OFFICIAL_WEIGHTS,
        input_size: int = 475,
        license: Optional[str] = None,
        shard_size: int = 10000,
        workers: int = 0,
        overwrite: bool = False,
        push_to_hub: Optional[str] = None,
        private: bool = False,
) -> int:
    """Convert every ``.pt`` map under ``src`` into the label-map dataset ``output``; returns the number
    of maps. ``class_names_file`` holds one name per line (default: ImageNet-1k's for 1000 classes);
    ``annotator``, ``weights``, ``input_size`` and ``license`` are recorded in the card;
    ``push_to_hub`` uploads the finished folder to that dataset repo."""
    given, output = output, os.path.abspath(output)
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise UserError(f'--output {given} is not empty; pass --overwrite to replace its label maps')
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f'--output {given} is a file, not a folder')
    listing = list_official_maps(src)
    class_names = _class_names(class_names_file, num_classes)
    ids = [i for i, _ in listing]
    paths = [p for _, p in listing]
    n = len(ids)
    num_shards = math.ceil(n / shard_size)
    k, h, w = read_official_map(paths[0], num_classes)[0].shape

    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.tmp-import-', dir=parent)
    try:
        os.chmod(staging, DIR_MODE)  # becomes the output: the usual mode, not mkdtemp's 0700
        loader = torch.utils.data.DataLoader(
            _MapFiles(paths, num_classes), batch_size=256, num_workers=workers,
            collate_fn=list, prefetch_factor=4 if workers > 0 else None)
        shard, buf_s, buf_c = 0, [], []
        with tqdm(total=n, unit='map', desc='import-relabel', dynamic_ncols=True) as bar:
            for batch in loader:
                for i, maps, err in batch:
                    if err:
                        raise UserError(err)
                    if tuple(maps[0].shape) != (k, h, w):
                        raise UserError(f'{paths[i]}: tensor of shape {[2, *maps[0].shape]}, the other maps are '
                                        f'{[2, k, h, w]}')
                    buf_s.append(maps[0])
                    buf_c.append(maps[1])
                    if len(buf_s) == min(shard_size, n - shard * shard_size):
                        a = shard * shard_size
                        write_shard(staging, shard, num_shards, ids[a:a + len(buf_s)], torch.stack(buf_s),
                                    torch.stack(buf_c), dtype, num_classes)
                        shard, buf_s, buf_c = shard + 1, [], []
                bar.update(len(batch))
        write_dataset_card(staging, {
            'annotator': annotator, 'weights': weights, 'input_size': input_size,
            'map_size': (h, w), 'topk': k, 'dtype': dtype, 'num_classes': num_classes,
            'class_names': class_names, 'license': license, 'repo_id': push_to_hub,
            'source': f'timm-multilabel import-relabel of {n} official ReLabel .pt maps',
        })
        _move_into(staging, output)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    _logger.info('import-relabel: wrote %d maps [%d, %d, %d] in %d shard(s) to %s', n, k, h, w, num_shards, output)
    if push_to_hub:
        _logger.info('import-relabel: pushed to %s', push_maps(output, push_to_hub, private=private))
    return n
