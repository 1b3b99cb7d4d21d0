"""train.py's DataLoaders: timm's loader flags, on Accelerate, with per-sample seeded augmentation.

What each timm flag does here (timm's ``create_loader`` / train.py meanings):

- ``--aug-repeats R``: timm's :class:`~timm.data.RepeatAugSampler` (each image R times per epoch,
  its repeats on different ranks). :class:`RepeatAugBatches` lays out every rank's timm list so that
  Accelerate's ``prepare`` (which deals whole batches round-robin to the ranks) hands each rank
  exactly its own list; ``prepare`` therefore shards it as any loader, and ``skip_first_batches``
  resumes it mid-epoch.
- ``--epoch-repeats R``: each train epoch passes over the data R times (timm: ``ceil(R * N)``
  samples an epoch; timm reads it for iterable datasets only, here it applies to every dataset).
- ``--train-batches-per-epoch K``: every rank loads exactly K batches an epoch, passing over the
  data as often as needed (fresh shuffles), as timm's scheduled loader does with ``num_batches``.
- ``--aug-splits N`` / ``--resplit``: timm's :class:`~timm.data.AugMixDataset` (a clean split and
  N-1 augmented ones of the same crop), collated as timm's ``fast_collate`` lays them out
  (``[N * B]``: split j is rows ``j*B .. j*B+B-1``, targets repeated); with ``--resplit`` the clean
  split is not randomly erased.
- ``--tta N``: the eval loader gives N views of each image (:func:`tta_views`) as ``[B, N, C, H, W]``;
  evaluation averages each image's N outputs (timm's validate reduction).
- ``--pin-mem``, ``--worker-seeding``: as timm (``pin_memory``; :func:`worker_init`).

Every sample's augmentation is seeded by (seed, epoch, index) (:class:`~timm_multilabel.data.seeded.SeededSamples`);
samplers that show an image more than once in an epoch name each showing by its copy number
(:class:`Copies`: item ``c * N + i`` is image i's c-th copy), so each copy draws its own augmentation,
the same for any ``--workers``, and a resumed run draws what an uninterrupted one would have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from accelerate import DataLoaderConfiguration
from timm.data import AugMixDataset, create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision import transforms

from ..data.seeded import SeededSamples, sample_seed
from ..errors import UserError
from ..evaluation import IndexedDataset
from .device_batches import uint8_train_images

__all__ = [
    'Copies', 'EpochPasses', 'RepeatAugBatches', 'AugSplits', 'aug_split_collate', 'TTAViews', 'tta_views',
    'worker_init', 'train_transform_kwargs', 'set_train_transform', 'train_sampler', 'train_collate', 'build_train_loader',
    'build_eval_loader', 'TrainLoader',
]

_MASK63 = (1 << 63) - 1


def _generator(seed: int, epoch: int, pass_index: int) -> torch.Generator:
    return torch.Generator().manual_seed(sample_seed(seed, epoch, pass_index) & _MASK63)


class Copies(Dataset):
    """``dataset`` seen ``copies`` times: item ``c * N + i`` is ``dataset[i]`` (N = ``len(dataset)``).

    Wrapped in :class:`SeededSamples`, whose seed is the item index, each copy of an image draws its
    own augmentation. Other attributes are those of the wrapped dataset.
    """

    def __init__(self, dataset: Dataset, copies: int):
        self.dataset = dataset
        self.copies = int(copies)
        self.num_images = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.copies * self.num_images

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(index) % self.num_images]

    def __getattr__(self, name: str) -> Any:
        if name in ('dataset', 'copies', 'num_images'):  # not yet set (unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochPasses(Sampler[int]):
    """Shuffled passes over N images, ``num_samples`` items an epoch (the same on every rank;
    Accelerate's ``prepare`` shards the batches).

    Pass p of an epoch is a permutation seeded by (seed, epoch, p) of the items ``p * N .. p * N + N - 1``
    (:class:`Copies`). Call :meth:`set_epoch` each epoch (Accelerate's loader does).
    """

    def __init__(self, num_images: int, num_samples: int, seed: int = 0):
        self.num_images = int(num_images)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def copies(self) -> int:
        """Passes an epoch (the :class:`Copies` the items index)."""
        return max(1, math.ceil(self.num_samples / self.num_images))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        n, left = self.num_images, self.num_samples
        for p in range(self.copies):
            perm = torch.randperm(n, generator=_generator(self.seed, self.epoch, p)) + p * n
            yield from perm[:left].tolist()
            left -= n


def _repeat_numbers(groups: torch.Tensor) -> torch.Tensor:
    """For a non-decreasing [L] tensor of group ids, each position's rank inside its group (0, 1, ...)."""
    first = torch.searchsorted(groups, groups, right=False)
    return torch.arange(len(groups)) - first


class RepeatAugBatches(RepeatAugSampler):
    """timm's :class:`~timm.data.RepeatAugSampler` for every rank at once, batched for Accelerate.

    Rank r's items are timm's (same sizes: ``num_selected_samples`` an epoch by default; the permutation
    is seeded by (seed, epoch) instead of the epoch alone), as :class:`Copies` items: the k-th repeat of
    image i is copy k. With ``num_batches`` (``--train-batches-per-epoch``) or ``epoch_repeats``
    (``--epoch-repeats``) a rank's list continues with further passes (fresh permutations, further copies).

    Each rank's list is cut to whole batches, and the batches are interleaved (rank 0's first, rank
    1's first, ..., rank 0's second, ...): Accelerate's ``prepare`` (``BatchSamplerShard``: batch b goes
    to rank ``b % num_replicas``) then gives each rank its own list. Use with ``batch_size`` and
    ``drop_last=True`` in the DataLoader.
    """

    def __init__(self, num_images: int, batch_size: int, num_replicas: int = 1, num_repeats: float = 3,
                 seed: int = 0, num_batches: Optional[int] = None, epoch_repeats: float = 0.0):
        super().__init__(range(num_images), num_replicas=num_replicas, rank=0, shuffle=True, num_repeats=num_repeats)
        self.num_images = int(num_images)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if num_batches is not None:
            per_rank = int(num_batches) * self.batch_size
        else:
            per_rank = math.ceil(max(1.0, epoch_repeats) * self.num_selected_samples)
        self.batches_per_rank = per_rank // self.batch_size
        self.passes = max(1, math.ceil(self.batches_per_rank * self.batch_size / max(1, self.num_selected_samples)))
        # copies a pass uses: ceil(R) repeats, times the wraps of timm's padding to total_size
        self.copies_per_pass = math.ceil(self.num_repeats) * math.ceil(self.total_size / self._repeated_size)

    @property
    def _repeated_size(self) -> int:
        if isinstance(self.num_repeats, float) and not self.num_repeats.is_integer():
            return math.ceil(self.num_repeats * self.num_images)
        return int(self.num_repeats) * self.num_images

    @property
    def copies(self) -> int:
        """:class:`Copies` an epoch's items index."""
        return self.passes * self.copies_per_pass

    def permutation(self, epoch: int, pass_index: int) -> torch.Tensor:
        """The [N] image order of one pass (timm: ``randperm`` seeded by the epoch alone)."""
        return torch.randperm(self.num_images, generator=_generator(self.seed, epoch, pass_index))

    def _pass(self, epoch: int, pass_index: int) -> torch.Tensor:
        """One pass of timm's repeated permutation, as items: position q holds the image of group
        ``q // R`` of the permutation, as copy ``repeat + pass * copies_per_pass`` (the repeat: q's rank in its group)."""
        repeats = self.num_repeats
        if self._repeated_size == int(repeats) * self.num_images and float(repeats).is_integer():
            groups = torch.arange(self._repeated_size) // int(repeats)
        else:  # timm's rule for a fractional R
            groups = torch.tensor([int(i // repeats) for i in range(self._repeated_size)], dtype=torch.long)
        copy = _repeat_numbers(groups) + pass_index * self.copies_per_pass
        return copy * self.num_images + self.permutation(epoch, pass_index)[groups]

    def _rank_slice(self, items: torch.Tensor, rank: int) -> torch.Tensor:
        """timm's share of rank ``rank``: positions rank, rank + W, ... (wrapping around: a wrap adds
        ceil(R) copies), ``num_selected_samples`` of them."""
        positions = torch.arange(rank, self.total_size, self.num_replicas)[:self.num_selected_samples]
        size = len(items)
        return items[positions % size] + (positions // size) * math.ceil(self.num_repeats) * self.num_images

    def _epoch_items(self, epoch: int) -> List[List[int]]:
        """Every rank's items of an epoch, whole batches only."""
        ranks: List[List[int]] = [[] for _ in range(self.num_replicas)]
        for p in range(self.passes):
            items = self._pass(epoch, p)
            for rank in range(self.num_replicas):
                ranks[rank] += self._rank_slice(items, rank).tolist()
        return [items[:self.batches_per_rank * self.batch_size] for items in ranks]

    def rank_items(self, rank: int, epoch: Optional[int] = None) -> List[int]:
        """Rank ``rank``'s items of an epoch (default: the current one), whole batches only."""
        return self._epoch_items(self.epoch if epoch is None else epoch)[rank]

    def __iter__(self) -> Iterator[int]:
        b = self.batch_size
        ranks = self._epoch_items(self.epoch)
        for j in range(self.batches_per_rank):
            for items in ranks:
                yield from items[j * b:(j + 1) * b]

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size * self.num_replicas


class AugSplits(AugMixDataset):
    """timm's :class:`~timm.data.AugMixDataset` (``(clean, aug_1, ..., aug_{N-1}), target``, every split
    from the same primary crop), with ``clean_final`` for the clean split (``--resplit``: the final
    stage without random erasing)."""

    def __init__(self, dataset: Dataset, num_splits: int, clean_final: Optional[Callable] = None):
        super().__init__(dataset, num_splits=num_splits)
        self.clean_final = clean_final

    def __getitem__(self, i: int) -> Tuple[Tuple[torch.Tensor, ...], Any]:
        if self.clean_final is None:
            return super().__getitem__(i)
        x, y = self.dataset[i]
        splits = [self.clean_final(x)] + [self._normalize(self.augmentation(x)) for _ in range(self.num_splits - 1)]
        return tuple(splits), y

    def __getattr__(self, name: str) -> Any:
        if name in ('dataset', 'augmentation', 'normalize', 'clean_final', 'num_splits'):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def aug_split_collate(batch: Sequence[Tuple[Sequence[torch.Tensor], Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """timm's ``fast_collate`` layout for split samples: ``B`` samples of N splits -> images
    [N * B, C, H, W] (split j is rows ``j*B .. j*B+B-1``) and targets repeated N times [N * B] (or [N * B, C])."""
    splits = len(batch[0][0])
    images = torch.stack([torch.stack([sample[0][j] for sample in batch]) for j in range(splits)]).flatten(0, 1)
    targets = default_collate([sample[1] for sample in batch])
    return images, targets.repeat((splits,) + (1,) * (targets.ndim - 1))


# --tta views in order: (crop position, flipped)
_TTA_VIEWS = (('center', False), ('center', True), ('tl', False), ('tr', False), ('bl', False), ('br', False),
              ('tl', True), ('tr', True), ('bl', True), ('br', True))
MAX_TTA = len(_TTA_VIEWS)


class _View:
    """One --tta view: the eval transform with its center crop moved to a corner and/or flipped."""

    def __init__(self, pre: Callable, crop: Optional[Callable], post: Callable, position: str, flip: bool):
        self.pre, self.crop, self.post, self.position, self.flip = pre, crop, post, position, flip

    def __call__(self, img: Any) -> torch.Tensor:
        img = self.pre(img)
        if self.crop is not None:
            size = self.crop.size if isinstance(self.crop.size, (tuple, list)) else (self.crop.size,) * 2
            h, w = int(size[0]), int(size[-1])
            width, height = TF.get_image_size(img)
            if self.position == 'center' or not isinstance(self.crop, transforms.CenterCrop) \
                    or width < w or height < h:
                img = self.crop(img)  # corners of an image no larger than the crop are its center
            else:
                top = 0 if self.position[0] == 't' else height - h
                left = 0 if self.position[1] == 'l' else width - w
                img = TF.crop(img, top, left, h, w)
        if self.flip:
            img = TF.hflip(img)
        return self.post(img)


def tta_views(eval_transform: Callable, n: int) -> List[Callable]:
    """``n`` (<= 10) views of timm's eval transform for ``--tta``: the center crop, its horizontal flip,
    the four corner crops (top-left, top-right, bottom-left, bottom-right), then their flips.

    The eval transform's center crop (torchvision ``CenterCrop``) is moved to the corners of the
    resized image; where there is no such crop, or the image is no larger than it, the corner views
    are the center one.
    """
    if not 1 <= n <= MAX_TTA:
        raise UserError(f'--tta {n}: expected 2 to {MAX_TTA} views (center, flip, 4 corners and their flips)')
    steps = list(getattr(eval_transform, 'transforms', [eval_transform]))
    cut = next((i for i, t in enumerate(steps) if type(t).__name__ in ('CenterCrop', 'CenterCropOrPad')), None)
    if cut is None:
        pre, crop, post = transforms.Compose([]), None, transforms.Compose(steps)
    else:
        pre, crop, post = transforms.Compose(steps[:cut]), steps[cut], transforms.Compose(steps[cut + 1:])
    return [_View(pre, crop, post, position, flip) for position, flip in _TTA_VIEWS[:n]]


class TTAViews(Dataset):
    """Each item is ``(Tensor[N, C, H, W], target)``: the N ``views`` of one image (``dataset`` with
    no transform of its own). Other attributes are those of the wrapped dataset."""

    def __init__(self, dataset: Dataset, views: Sequence[Callable]):
        self.dataset = dataset
        self.views = list(views)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Any]:
        img, target = self.dataset[index]
        return torch.stack([view(img) for view in self.views]), target

    def __getattr__(self, name: str) -> Any:
        if name in ('dataset', 'views'):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def worker_init(worker_id: int, worker_seeding: str = 'all') -> None:
    """timm's ``--worker-seeding``: ``'all'`` seeds numpy in each worker from its torch seed (torch and
    ``random`` are seeded by the DataLoader); ``'part'`` leaves numpy as the main process had it.

    Each sample's augmentation reseeds all three around its ``__getitem__`` (SeededSamples), so this
    reaches only random draws made in a worker outside one (a collate function, for instance)."""
    info = torch.utils.data.get_worker_info()
    if worker_seeding == 'all' and info is not None:
        np.random.seed(info.seed % (2 ** 32 - 1))


def train_transform_kwargs(args: Any, data_config: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of timm's ``create_transform`` for training (the plain and the box-recording
    ReLabel transform take the same)."""
    return dict(
        input_size=data_config['input_size'], scale=args.scale, ratio=args.ratio, hflip=args.hflip,
        vflip=args.vflip, color_jitter=args.color_jitter, color_jitter_prob=getattr(args, 'color_jitter_prob', None),
        grayscale_prob=getattr(args, 'grayscale_prob', None) or 0.0,
        gaussian_blur_prob=getattr(args, 'gaussian_blur_prob', None) or 0.0, auto_augment=args.aa,
        interpolation=args.train_interpolation, mean=data_config['mean'], std=data_config['std'],
        re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, train_crop_mode=args.train_crop_mode)


def set_train_transform(dataset: Dataset, args: Any, transform_kwargs: Dict[str, Any]) -> Dataset:
    """Give ``dataset`` timm's training transform (ending in uint8 images where
    :func:`~.device_batches.uint8_train_images`); with ``--aug-splits N`` wrap it in :class:`AugSplits`
    (returned). ``--resplit`` keeps random erasing off the clean split."""
    splits = getattr(args, 'aug_splits', 0) or 0
    if splits <= 1:  # uint8 images unless a per-sample float step needs them (see device_batches)
        dataset.transform = create_transform(is_training=True, no_aug=args.no_aug,
                                             use_prefetcher=uint8_train_images(args), **transform_kwargs)
        return dataset
    primary, secondary, final = create_transform(is_training=True, separate=True, **transform_kwargs)
    dataset.transform = None
    clean_final = None
    if getattr(args, 'resplit', False) and transform_kwargs.get('re_prob'):
        clean_final = create_transform(is_training=True, separate=True, **{**transform_kwargs, 're_prob': 0.0})[2]
    wrapped = AugSplits(dataset, num_splits=splits, clean_final=clean_final)
    wrapped.transform = (primary, secondary, final)
    return wrapped


def train_sampler(args: Any, num_images: int, num_processes: int) -> Optional[Sampler]:
    """The sampler ``--aug-repeats``, ``--epoch-repeats`` or ``--train-batches-per-epoch`` asks for; None
    for timm's plain shuffle (one pass an epoch, which Accelerate's seedable sampler shards)."""
    aug_repeats = getattr(args, 'aug_repeats', 0) or 0
    epoch_repeats = getattr(args, 'epoch_repeats', 0) or 0
    num_batches = getattr(args, 'train_batches_per_epoch', None)
    if aug_repeats:
        return RepeatAugBatches(num_images, args.batch_size, num_replicas=num_processes, num_repeats=aug_repeats,
                                seed=args.seed, num_batches=num_batches, epoch_repeats=epoch_repeats)
    if num_batches is not None:
        return EpochPasses(num_images, num_batches * args.batch_size * num_processes, seed=args.seed)
    if epoch_repeats > 1:
        return EpochPasses(num_images, math.ceil(epoch_repeats * num_images), seed=args.seed)
    return None


def train_collate(args: Any) -> Optional[Callable]:
    """The training collate the flags need: :func:`aug_split_collate` with ``--aug-splits``, else None
    (torch's default)."""
    return aug_split_collate if (getattr(args, 'aug_splits', 0) or 0) > 1 else None


def dataloader_config(args: Any) -> DataLoaderConfiguration:
    """Accelerate's DataLoader settings for train.py: its seedable sampler (the shuffle follows
    ``--seed`` and the epoch) and, with ``--pin-mem``, asynchronous copies of the pinned batches to
    the GPU (timm's prefetcher copies with ``non_blocking=True``)."""
    return DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed,
                                   non_blocking=bool(getattr(args, 'pin_mem', False)))


def loader_kwargs(args: Any) -> Dict[str, Any]:
    workers = args.workers
    return dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=bool(getattr(args, 'pin_mem', False)),
                worker_init_fn=partial(worker_init, worker_seeding=getattr(args, 'worker_seeding', 'all'))
                if workers > 0 else None)


@dataclass
class TrainLoader:
    """The training DataLoader (before ``accelerator.prepare``) and the :class:`SeededSamples` whose
    epoch train.py sets."""

    loader: DataLoader
    samples: SeededSamples


def build_train_loader(args: Any, dataset: Dataset, collate_fn: Optional[Callable], num_processes: int) -> TrainLoader:
    """The training loader of train.py: seeded samples, timm's sampler flags (:func:`train_sampler`),
    ``--aug-splits`` collation, ``--pin-mem``, ``--worker-seeding``; shuffled, whole batches only.
    Refuses, in one line, an epoch shorter than one batch per process."""
    sampler = train_sampler(args, len(dataset), num_processes)
    if collate_fn is None:
        collate_fn = train_collate(args)
    if sampler is not None and getattr(sampler, 'copies', 1) > 1:
        samples = SeededSamples(Copies(dataset, sampler.copies), args.seed)
    else:
        samples = SeededSamples(dataset, args.seed)
    loader = DataLoader(samples, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        collate_fn=collate_fn, **loader_kwargs(args))
    if len(loader) < num_processes:
        raise UserError(f'the training set has {len(dataset)} samples, fewer than one batch of {args.batch_size} per '
                        f'process{" an epoch with these flags" if sampler is not None else ""}; lower --batch-size')
    return TrainLoader(loader, samples)


def build_eval_loader(args: Any, dataset: Dataset, eval_transform: Callable) -> DataLoader:
    """The evaluation loader of ``(image, label, index)`` batches (:class:`IndexedDataset`), in order.
    With ``--tta N`` each image comes as its N views ``[N, C, H, W]`` (:func:`tta_views`), and a batch
    holds ``--validation-batch-size // N`` images (at least one)."""
    batch_size = args.validation_batch_size or args.batch_size
    tta = getattr(args, 'tta', 0) or 0
    if tta > 1:
        dataset.transform = None
        dataset = TTAViews(dataset, tta_views(eval_transform, tta))
        batch_size = max(1, batch_size // tta)
    else:
        dataset.transform = eval_transform
    # persistent workers, as timm's eval loader: two new worker processes every evaluation cost
    # ~0.3 s of CPU and ~0.6 s of wall time an epoch (H5's profile, issue 12)
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size, shuffle=False, **loader_kwargs(args))
