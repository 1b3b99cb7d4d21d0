"""Variable-shape training batches: timm's scheduled resolution (``--train-img-sizes``) and NaFlex
(``--naflex-loader``) loaders, with this package's guarantees.

Both build on timm's pieces: ``ScheduledBatchSampler`` draws each batch's choice (an image size,
or a NaFlex sequence length) and its batch size; timm's transforms (``create_transform``, with
``naflex=True`` for ``RandomResizedCropToSequence``), ``Patchify``, ``NaFlexCollator`` and
``NaFlexMixup`` do the rest. What is ours:

- every sample's augmentation draws depend on (seed, epoch, sample index) only (``SeededSamples``),
  whatever its batch's choice and whatever ``--workers``; NaFlex's Mixup/CutMix draws depend on
  (seed, epoch, the batch's first sample);
- the batch order is a function of (seed, epoch), so ``accelerator.skip_first_batches`` resumes
  an epoch exactly in the middle;
- under Accelerate each scheduled batch comes as ``num_processes`` consecutive batches of the same
  shape, which Accelerate's round-robin sharding hands one to each process: every process trains
  on the same size at each step, on its own samples, as timm's per-rank samplers do.

timm's meanings: the learning rate is scaled from the policy-average batch size (scheduled
sizes) or ``--batch-size`` (NaFlex), and each batch's loss is multiplied by ``B / reference``
(``linear``), its square root (``sqrt``) or 1 (``none``): ``--variable-batch-loss-scale``,
``--naflex-loss-scale``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from timm.data import create_transform
from timm.data.naflex_dataset import NaFlexCollator, calculate_naflex_batch_size
from timm.data.naflex_mixup import NaFlexMixup
from timm.data.naflex_transforms import Patchify
from timm.data.scheduled_sampler import ScheduledBatchSampler
from timm.layers import to_2tuple
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.bad_images import DropMissing, drop_missing
from ..data.seeded import SeededSamples, sample_seed, seeded_generators
from ..errors import UserError
from ..relabel.boxed_dataset import BoxedDataset
from ..relabel.transforms import create_box_transform
from ..evaluation import IndexedDataset
from .loaders import Copies, EpochPasses, RepeatAugBatches, loader_kwargs

__all__ = [
    'LOSS_SCALE_MODES', 'ChoiceSamples', 'GroupedScheduledBatchSampler', 'IndexedNaFlexCollate', 'NaFlexBatchCollate',
    'TransformedDataset', 'VariableBatchLoader', 'batch_loss_scale', 'build_variable_batches',
    'check_variable_batch_args', 'create_naflex_eval_loader', 'naflex_batch_sizes', 'naflex_patch_size',
    'variable_batch_mode',
]

LOSS_SCALE_MODES = ('none', 'sqrt', 'linear')
NAFLEX_BATCH_DIVISOR = 8  # timm's NaFlexMapDatasetWrapper default: batch sizes are multiples of 8 (floor)
_MIX_STREAM = 0x6D69787570  # 'mixup': NaFlex's batch mixing draws get their own stream per batch

# timm's defaults of the flags that only mean something in one mode (a changed one elsewhere is refused)
_SCHEDULED_ONLY = {'train_batch_sizes': None, 'train_size_probs': None, 'train_size_schedule': 'constant',
                   'train_size_schedule_spread': 0.65, 'train_size_random_mix': 0.1,
                   'variable_batch_loss_scale': 'none'}
_NAFLEX_ONLY = {'naflex_train_seq_lens': [128, 256, 576, 784, 1024], 'naflex_max_seq_len': 576,
                'naflex_patch_sizes': None, 'naflex_patch_size_probs': None, 'naflex_loss_scale': 'linear',
                'naflex_patchify_channels_first': False}


def _flag(dest: str) -> str:
    return '--' + dest.replace('_', '-')


def variable_batch_mode(args: argparse.Namespace) -> Optional[str]:
    """``'scheduled'`` (--train-img-sizes), ``'naflex'`` (--naflex-loader) or None (fixed batches)."""
    if getattr(args, 'naflex_loader', False):
        return 'naflex'
    if getattr(args, 'train_img_sizes', None):
        return 'scheduled'
    return None


def _check_weights(flag: str, weights: Optional[Sequence[float]], n: int, what: str) -> None:
    if weights is None:
        return
    if len(weights) != n:
        raise UserError(f'{flag}: {len(weights)} values for {n} {what}; give one per value')
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f'{flag} {" ".join(map(str, weights))}: weights must be finite, >= 0, with a positive sum')


def check_variable_batch_args(args: argparse.Namespace) -> None:
    """Refuse, in one line, scheduled-resolution and NaFlex flags that are malformed, given without
    their mode, or combined with flags they cannot mean anything with."""
    mode = variable_batch_mode(args)
    if args.naflex_loader and args.train_img_sizes:
        raise UserError('--naflex-loader and --train-img-sizes are alternative loader modes (as in timm); choose one')
    for dest, default in _SCHEDULED_ONLY.items():
        if mode != 'scheduled' and getattr(args, dest) != default:
            hint = ('; NaFlex batches take --naflex-loss-scale' if dest == 'variable_batch_loss_scale' else '') \
                if mode == 'naflex' else '; add --train-img-sizes'
            raise UserError(f'{_flag(dest)} applies to scheduled resolutions (--train-img-sizes){hint}')
    for dest, default in _NAFLEX_ONLY.items():
        if mode != 'naflex' and getattr(args, dest) != default:
            raise UserError(f'{_flag(dest)} applies to the NaFlex loader; add --naflex-loader')
    if mode is None:
        return
    name = '--train-img-sizes' if mode == 'scheduled' else '--naflex-loader'
    refused = {
        'aug_splits': (args.aug_splits >= 2, 'augmentation splits need one fixed-shape batch to split'),
        'use_multi_epochs_loader': (args.use_multi_epochs_loader, 'timm refuses it too: the schedule is drawn '
                                                                  'per epoch'),
    }
    if mode == 'naflex':
        refused.update({
            'channels_last': (args.channels_last, 'NaFlex inputs are patch sequences, not NCHW images'),
            'save_images': (getattr(args, 'save_images', False), 'it writes image batches [B, C, H, W]; NaFlex '
                                                                 'batches are patch sequences'),
            'tta': (bool(getattr(args, 'tta', 0)), 'evaluation runs on NaFlex patch sequences, not image crops'),
            'mixup_mode': (args.mixup_mode != 'batch', "NaFlexMixup mixes aspect-sorted pairs, one lambda per "
                                                       "batch; it has no 'pair' or 'elem' mode"),
            'cutmix_minmax': (args.cutmix_minmax is not None, 'NaFlexMixup draws CutMix boxes from --cutmix alone'),
            'target_transform': (args.target_transform != 'mixup', 'registered target transforms act on image '
                                                                   'batches [B, C, H, W]; NaFlex mixes in the '
                                                                   'loader with timm\'s NaFlexMixup'),
        })
    for dest, (given, why) in refused.items():
        if given:
            raise UserError(f'{_flag(dest)} cannot be combined with {name}: {why}')
    if mode == 'scheduled':
        sizes = args.train_img_sizes
        if any(s <= 0 for s in sizes):
            raise UserError(f'--train-img-sizes {" ".join(map(str, sizes))}: sizes must be positive')
        if args.train_batch_sizes is not None:
            if len(args.train_batch_sizes) != len(sizes):
                raise UserError(f'--train-batch-sizes: {len(args.train_batch_sizes)} values for {len(sizes)} '
                                f'--train-img-sizes; give one per size')
            if any(b <= 0 for b in args.train_batch_sizes):
                raise UserError('--train-batch-sizes: batch sizes must be positive')
        _check_weights('--train-size-probs', args.train_size_probs, len(sizes), '--train-img-sizes')
        if args.train_size_schedule == 'progressive' and len(sizes) < 2:
            raise UserError('--train-size-schedule progressive moves from the first size to the last; give two or '
                            'more --train-img-sizes')
        if args.train_size_schedule != 'progressive':
            for dest in ('train_size_schedule_spread', 'train_size_random_mix'):
                if getattr(args, dest) != _SCHEDULED_ONLY[dest]:
                    raise UserError(f'{_flag(dest)} applies to --train-size-schedule progressive')
        if args.train_size_schedule_spread < 0:
            raise UserError(f'--train-size-schedule-spread {args.train_size_schedule_spread}: must be >= 0')
        if not 0 <= args.train_size_random_mix <= 1:
            raise UserError(f'--train-size-random-mix {args.train_size_random_mix}: must be in [0, 1]')
        mixing = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
        odd = [b for b in (args.train_batch_sizes or []) if b % 2]
        if mixing and odd:
            raise UserError(f'--train-batch-sizes {odd[0]}: Mixup/CutMix mix each sample with its mirror in the '
                            f'batch and need even batch sizes')
    else:
        if any(s <= 0 for s in args.naflex_train_seq_lens) or args.naflex_max_seq_len <= 0:
            raise UserError('--naflex-train-seq-lens and --naflex-max-seq-len: sequence lengths must be positive')
        if args.naflex_patch_sizes is not None and any(p <= 0 for p in args.naflex_patch_sizes):
            raise UserError('--naflex-patch-sizes: patch sizes must be positive')
        if args.naflex_patch_size_probs is not None and not args.naflex_patch_sizes:
            raise UserError('--naflex-patch-size-probs weighs --naflex-patch-sizes; add --naflex-patch-sizes')
        _check_weights('--naflex-patch-size-probs', args.naflex_patch_size_probs, len(args.naflex_patch_sizes or []),
                       '--naflex-patch-sizes')


def batch_loss_scale(batch_size: int, reference: float, mode: str) -> float:
    """timm's per-batch loss factor: ``B / reference`` (linear), its square root (sqrt) or 1 (none)."""
    if mode == 'none':
        return 1.0
    ratio = batch_size / reference
    if mode == 'sqrt':
        return ratio ** 0.5
    if mode == 'linear':
        return ratio
    raise UserError(f'loss scale mode {mode!r}: expected one of {", ".join(LOSS_SCALE_MODES)}')


def naflex_batch_sizes(batch_size: int, seq_lens: Sequence[int]) -> List[int]:
    """timm's NaFlex batch size per sequence length: the token budget ``batch_size * max(seq_lens)``
    divided by the length, floored to a multiple of 8 (at least 1)."""
    tokens = batch_size * max(seq_lens)
    return [calculate_naflex_batch_size(tokens, s, divisor=NAFLEX_BATCH_DIVISOR, rounding='floor') for s in seq_lens]


# ---------------------------------------------------------------------------------------------- datasets


class TransformedDataset(Dataset):
    """``dataset[i]`` (``(img, label, ...)`` or None for a skipped bad image) with ``transform``
    applied to the image; the wrapped dataset's own transform must be None."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if item is None:
            return None
        return (self.transform(item[0]), *item[1:])


class ChoiceSamples(Dataset):
    """Index ``(sample index, choice)`` -> sample ``index`` of ``choices[choice]``, its random draws
    seeded by (seed, epoch, sample index) alone (``SeededSamples``): the same crop, flip and
    RandAugment draws whichever size the batch has.

    ``tag=True`` appends ``(choice, index)`` to each sample (the NaFlex collate needs them).
    A None sample (a skipped bad image) stays None.
    """

    def __init__(self, choices: Sequence[Dataset], seed: int, tag: bool = False):
        if not choices:
            raise ValueError('ChoiceSamples: no choices')
        self.choices = [SeededSamples(d, seed) for d in choices]
        self.tag = tag

    @property
    def epoch(self) -> int:
        return self.choices[0].epoch

    def set_epoch(self, epoch: int) -> None:
        for c in self.choices:
            c.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.choices[0])

    def _tagged(self, item: Any, sample_index: int, choice: int) -> Any:
        return item if item is None or not self.tag else (*item, choice, sample_index)

    def __getitem__(self, index: Tuple[int, int]) -> Any:
        sample_index, choice = index
        return self._tagged(self.choices[choice][sample_index], sample_index, choice)

    def __getitems__(self, indices: Sequence[Tuple[int, int]]) -> List[Any]:
        """A batch's items (one choice, as the scheduled sampler gives them), drawn exactly as
        ``self[index]`` would, through ``SeededSamples.__getitems__`` where it has one."""
        choice = indices[0][1]
        seeded = self.choices[choice]
        # the class's own method only: SeededSamples forwards unknown attributes to the wrapped dataset
        if not hasattr(type(seeded), '__getitems__') or any(c != choice for _, c in indices):
            return [self[index] for index in indices]
        items = seeded.__getitems__([i for i, _ in indices])
        return [self._tagged(item, i, choice) for item, (i, _) in zip(items, indices)]


# ---------------------------------------------------------------------------------------------- sampling


class _IndexGroups(Sampler):
    """The items of ``sampler`` (an epoch's order) in tuples of ``group`` consecutive ones, the
    remainder left out: one tuple per scheduled sample slot, one item per process."""

    def __init__(self, sampler: Sampler, group: int):
        self.sampler, self.group = sampler, group

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.group

    def __iter__(self) -> Iterator[Tuple[int, ...]]:
        it = iter(self.sampler)
        return zip(*[it] * self.group)


class GroupedScheduledBatchSampler(ScheduledBatchSampler):
    """timm's ``ScheduledBatchSampler`` whose every scheduled batch comes as ``num_replicas``
    consecutive batches of the same choice and size (one per process, disjoint items), so
    Accelerate's round-robin sharding gives every process the same shape at each step. The
    schedule is that of one process's share of ``sampler``'s items (``len(sampler) // num_replicas``);
    ``sampler`` must order the items by (seed, epoch) alone (e.g. ``EpochPasses``) and have ``set_epoch``.

    Yields lists of ``(item, choice)``. With ``patch_probs`` each scheduled batch also draws a
    patch-size index ``p`` and the choice becomes ``choice * len(patch_probs) + p``.
    """

    def __init__(self, sampler: Sampler, batch_sizes: Sequence[int], num_replicas: int = 1, seed: int = 0,
                 patch_probs: Optional[Sequence[float]] = None, **kwargs: Any):
        self.num_replicas = int(num_replicas)
        self.patch_probs = None if patch_probs is None else torch.tensor(patch_probs, dtype=torch.float64)
        if len(sampler) < self.num_replicas * min(batch_sizes):
            raise UserError(f'the training set has {len(sampler)} samples an epoch, fewer than one batch of '
                            f'{min(batch_sizes)} per process; lower the batch sizes')
        try:
            super().__init__(_IndexGroups(sampler, self.num_replicas), batch_sizes, seed=seed, **kwargs)
        except ValueError as e:  # e.g. no full batch of the progressive average fits the epoch
            raise UserError(f'the scheduled batches of {list(batch_sizes)} do not fit the {len(sampler)} training '
                            f'samples an epoch ({e})') from None

    def __len__(self) -> int:
        return super().__len__() * self.num_replicas

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -2))
        for batch in super().__iter__():
            offset, stride = 0, 1
            if self.patch_probs is not None:
                stride = len(self.patch_probs)
                offset = int(torch.multinomial(self.patch_probs, 1, generator=g).item())
            for rank in range(self.num_replicas):
                yield [(group[rank], choice * stride + offset) for group, choice in batch]


# ---------------------------------------------------------------------------------------------- NaFlex


class NaFlexBatchCollate:
    """One NaFlex training batch: items ``(image [C, h, w], label, choice, index)`` of one choice ->
    ``({'patches': [B, L, P*P*C] (or [B, L, Ph, Pw, C] with variable patch sizes), 'patch_coord':
    [B, L, 2], 'patch_valid': [B, L], 'seq_len': L}, target [B] or [B, num_classes])``.

    ``choices[c] = (seq_len, patch_size)``. ``mixup`` (timm's NaFlexMixup) runs before patchifying,
    its draws seeded by (seed, epoch, the batch's first sample index); ``epochs`` gives the epoch
    (the ChoiceSamples the loader reads, shared with its workers).
    """

    def __init__(self, choices: Sequence[Tuple[int, Tuple[int, int]]], variable_patch: bool,
                 channels_last: bool = True, mixup: Optional[NaFlexMixup] = None, seed: int = 0,
                 epochs: Optional[ChoiceSamples] = None):
        self.choices = list(choices)
        self.patchifiers = {p: Patchify(p, flatten_patches=not variable_patch, channels_last=channels_last)
                            for _, p in self.choices}
        self.collators = {s: NaFlexCollator(s) for s, _ in self.choices}
        self.mixup, self.seed, self.epochs = mixup, seed, epochs

    def __call__(self, items: Sequence[Tuple[Any, ...]]) -> Tuple[Dict[str, Any], torch.Tensor]:
        imgs = [it[0] for it in items]
        targets: Any = [it[1] for it in items]
        seq_len, patch = self.choices[items[0][-2]]
        if self.mixup is not None:
            epoch = self.epochs.epoch if self.epochs is not None else 0
            self.mixup.set_epoch(epoch)  # --mixup-off-epoch, read in the worker
            with seeded_generators(sample_seed(self.seed ^ _MIX_STREAM, epoch, items[0][-1])):
                imgs, targets = self.mixup(imgs, targets)
        patchify = self.patchifiers[patch]
        return self.collators[seq_len]([(patchify(img), t) for img, t in zip(imgs, targets)])


class IndexedNaFlexCollate:
    """Evaluation batches of ``IndexedDataset`` items ``(patch dict, label, index)`` -> ``(inputs, labels [B],
    indices [B])``, padded to ``max_seq_len`` patches by timm's ``NaFlexCollator``."""

    def __init__(self, max_seq_len: int):
        self.collator = NaFlexCollator(max_seq_len)

    def __call__(self, items: Sequence[Tuple[Any, Any, int]]) -> Tuple[Dict[str, Any], torch.Tensor, torch.Tensor]:
        inputs, labels = self.collator([(x, y) for x, y, _ in items])
        return inputs, labels, torch.tensor([i for _, _, i in items], dtype=torch.int64)


def naflex_patch_size(model: torch.nn.Module, model_name: str,
                      patch_sizes: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """The model's NaFlex patch size. Refused: a model that does not take patch sequences, and
    ``patch_sizes`` other than the model's for a naflexvit built without its patch interpolator."""
    if not callable(getattr(model, 'get_patch_size', None)):
        raise UserError(f'--naflex-loader: {model_name} does not take NaFlex patch sequences (it has no '
                        f'get_patch_size()); use a NaFlex model such as naflexvit_base_patch16_gap')
    patch = to_2tuple(model.get_patch_size())
    embeds = getattr(model, 'embeds', None)
    if (patch_sizes and any(to_2tuple(p) != patch for p in patch_sizes)
            and embeds is not None and not getattr(embeds, 'enable_patch_interpolator', True)):
        raise UserError(f'--naflex-patch-sizes {" ".join(map(str, patch_sizes))}: {model_name} embeds patches of '
                        f'{patch[0]}x{patch[1]} only; create it with --model-kwargs enable_patch_interpolator=True')
    return patch


def create_naflex_eval_loader(dataset_eval: Dataset, args: argparse.Namespace, patch_size: Tuple[int, int],
                              data_config: Dict[str, Any], indexed: Callable[[Dataset], Dataset],
                              **loader_kwargs: Any) -> DataLoader:
    """timm's NaFlex evaluation: aspect-preserving resize to at most ``--naflex-max-seq-len`` patches of the
    model's patch size, padded to that length; batches of ``indexed(dataset_eval)`` items."""
    dataset_eval.transform = create_transform(
        data_config['input_size'], is_training=False, interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], naflex=True, patch_size=patch_size,
        max_seq_len=args.naflex_max_seq_len, patchify=True,
        patchify_channels_last=not args.naflex_patchify_channels_first)
    return DataLoader(indexed(dataset_eval), shuffle=False, collate_fn=IndexedNaFlexCollate(args.naflex_max_seq_len),
                      **loader_kwargs)


# ---------------------------------------------------------------------------------------------- the loader


@dataclass
class VariableBatchLoader:
    """What train.py needs from a variable-shape training loader.

    Attributes:
        loader: the (unprepared) training DataLoader of ``(images [B, C, H, W] or NaFlex dict, target)``.
        dataset: the seeded samples the loader reads.
        batch_sampler: the schedule.
        reference_batch_size: the batch size the LR is scaled from and losses are scaled to.
        loss_scale_mode: none, sqrt or linear.
        mode: 'scheduled' or 'naflex'.
        soft_targets: the loader already mixes targets into dense ``[B, C]`` rows (NaFlexMixup).
        description: one line for the log.
        patch_size: the model's NaFlex patch size (evaluation), None for scheduled sizes.
    """
    loader: DataLoader
    dataset: ChoiceSamples
    batch_sampler: GroupedScheduledBatchSampler
    reference_batch_size: float
    loss_scale_mode: str
    mode: str
    soft_targets: bool
    description: str
    patch_size: Optional[Tuple[int, int]] = None

    @property
    def samples(self) -> 'VariableBatchLoader':
        """What train.py calls ``set_epoch`` on each epoch (as the fixed-batch ``TrainLoader.samples``)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Each sample's draws and the batch schedule of ``epoch`` (Accelerate's own ``set_epoch`` does
        not reach the schedule when it shards the loader over processes)."""
        self.dataset.set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)

    def loss_scale(self, images: Union[torch.Tensor, Dict[str, torch.Tensor]]) -> float:
        """The factor of this batch's loss (see :func:`batch_loss_scale`)."""
        batch = images['patches'].shape[0] if isinstance(images, dict) else images.shape[0]
        return batch_loss_scale(batch, self.reference_batch_size, self.loss_scale_mode)

    def eval_loader(self, args: argparse.Namespace, dataset_eval: Dataset, data_config: Dict[str, Any]
                    ) -> Optional[DataLoader]:
        """NaFlex: the evaluation loader (:func:`create_naflex_eval_loader`); None for scheduled sizes,
        which evaluate as a fixed-size run does."""
        if self.mode != 'naflex':
            return None
        kwargs = {**loader_kwargs(args), 'persistent_workers': False}
        return create_naflex_eval_loader(dataset_eval, args, self.patch_size, data_config, IndexedDataset,
                                         batch_size=args.validation_batch_size or args.batch_size, **kwargs)


def _choice_datasets(dataset: Dataset, transforms: Sequence[Callable], copies: int) -> List[Dataset]:
    """One dataset per transform; ``copies`` > 1: each seen that often an epoch (``Copies``)."""
    if isinstance(dataset, BoxedDataset):  # --relabel-maps: one box-recording transform per size
        views = [BoxedDataset(dataset.dataset, t, image_ids=dataset.image_ids) for t in transforms]
    else:
        dataset.transform = None
        views = [TransformedDataset(dataset, t) for t in transforms]
    return [Copies(v, copies) for v in views] if copies > 1 else views


class _RankInterleaved(Sampler):
    """``--aug-repeats``: timm's RepeatAugSampler lists of every process (``loaders.RepeatAugBatches``),
    interleaved item by item (rank 0's first, rank 1's first, ...), so that each group of
    ``num_replicas`` consecutive items holds one item of each process's list: each process then
    trains on its own timm list, an image's repeats on different processes."""

    def __init__(self, ranks: RepeatAugBatches):
        self.ranks = ranks
        self.copies = ranks.copies

    def set_epoch(self, epoch: int) -> None:
        self.ranks.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ranks)

    def __iter__(self) -> Iterator[int]:
        lists = [self.ranks.rank_items(r) for r in range(self.ranks.num_replicas)]
        return (items[j] for j in range(len(lists[0])) for items in lists)


def _epoch_items(args: argparse.Namespace, num_images: int, num_processes: int, batch_sizes: Sequence[int]
                 ) -> Union[EpochPasses, _RankInterleaved]:
    """The (seed, epoch) order of an epoch's items, as the fixed-batch loader has them
    (``loaders``): one shuffled pass, ``--epoch-repeats`` passes, timm's ``--aug-repeats`` lists,
    or with ``--train-batches-per-epoch K`` enough passes for K of the largest batches a process."""
    num_batches = args.train_batches_per_epoch
    if args.aug_repeats:
        return _RankInterleaved(RepeatAugBatches(
            num_images, max(batch_sizes) if num_batches else 1, num_replicas=num_processes,
            num_repeats=args.aug_repeats, seed=args.seed, num_batches=num_batches,
            epoch_repeats=args.epoch_repeats or 0.0))
    num_items = num_images
    if num_batches is not None:
        num_items = num_batches * max(batch_sizes) * num_processes
    elif (args.epoch_repeats or 0) > 1:
        num_items = math.ceil(args.epoch_repeats * num_images)
    return EpochPasses(num_images, num_items, seed=args.seed)


def build_variable_batches(
        args: argparse.Namespace,
        dataset_train: Dataset,
        transform_kwargs: Dict[str, Any],
        collate_fn: Optional[Callable],
        num_processes: int,
        num_classes: int,
        model: Optional[torch.nn.Module] = None,
) -> Optional[VariableBatchLoader]:
    """The training loader of ``--train-img-sizes`` or ``--naflex-loader`` (None for neither).

    Args:
        dataset_train: the training set as train.py built it: an image dataset, or the
            ``BoxedDataset`` of ``--relabel-maps`` (scheduled sizes only).
        transform_kwargs: ``timm.data.create_transform`` training arguments (``input_size`` is
            replaced by each scheduled size; NaFlex adds ``max_seq_len`` and ``patch_size``).
        collate_fn: train.py's collate (LabelPooling, the bad-image drop) or None.
        model: the model (NaFlex: its patch size; one that takes no patch sequences is refused).
    """
    mode = variable_batch_mode(args)
    if mode is None:
        return None
    kwargs = dict(transform_kwargs)
    no_aug = kwargs.pop('no_aug', args.no_aug)
    num_images = len(dataset_train)  # type: ignore[arg-type]
    if mode == 'scheduled':
        boxed = isinstance(dataset_train, BoxedDataset)
        channels = kwargs['input_size'][0]
        batch_sizes = args.train_batch_sizes or [args.batch_size] * len(args.train_img_sizes)
        make = create_box_transform if boxed else partial(create_transform, is_training=True, no_aug=no_aug)
        transforms = [make(**{**kwargs, 'input_size': (channels, s, s)}) for s in args.train_img_sizes]
        items = _epoch_items(args, num_images, num_processes, batch_sizes)
        sampler = GroupedScheduledBatchSampler(
            items, batch_sizes, num_replicas=num_processes, seed=args.seed, choice_weights=args.train_size_probs,
            drop_last=True, num_batches=args.train_batches_per_epoch, choice_schedule=args.train_size_schedule,
            schedule_epochs=args.epochs if args.train_size_schedule == 'progressive' else None,
            schedule_spread=args.train_size_schedule_spread, schedule_random_mix=args.train_size_random_mix)
        samples = ChoiceSamples(_choice_datasets(dataset_train, transforms, items.copies), args.seed)
        reference = sampler.average_batch_size
        description = (f'scheduled sizes {args.train_img_sizes} with batch sizes {list(sampler.batch_sizes)} '
                       f'({args.train_size_schedule}), {len(sampler) // num_processes} batches/epoch per process, '
                       f'policy-average batch {reference:.2f}')
        loss_mode, soft, patch_size = args.variable_batch_loss_scale, False, None
    else:
        if isinstance(dataset_train, BoxedDataset):
            raise UserError('--naflex-loader cannot be combined with --relabel-maps: NaFlex crops do not record '
                            'the crop box LabelPooling needs')
        patch_size = naflex_patch_size(model, args.model, args.naflex_patch_sizes)
        seq_lens = sorted(set(args.naflex_train_seq_lens))
        variable_patch = args.naflex_patch_sizes is not None
        patches = [to_2tuple(p) for p in args.naflex_patch_sizes] if variable_patch else [patch_size]
        channels_last = not args.naflex_patchify_channels_first
        kwargs.pop('input_size', None)
        choices = [(s, p) for s in seq_lens for p in patches]
        transforms = [create_transform(is_training=True, no_aug=no_aug, naflex=True, max_seq_len=s, patch_size=p,
                                       patchify_channels_last=channels_last, **kwargs) for s, p in choices]
        batch_sizes = naflex_batch_sizes(args.batch_size, seq_lens)
        items = _epoch_items(args, num_images, num_processes, batch_sizes)
        sampler = GroupedScheduledBatchSampler(
            items, batch_sizes, num_replicas=num_processes, seed=args.seed, drop_last=False,
            num_batches=args.train_batches_per_epoch,
            patch_probs=(args.naflex_patch_size_probs or [1.0] * len(patches)) if variable_patch else None)
        samples = ChoiceSamples(_choice_datasets(dataset_train, transforms, items.copies), args.seed, tag=True)
        mixup = None
        if args.mixup > 0 or args.cutmix > 0:
            mixup = NaFlexMixup(num_classes=num_classes, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
                                switch_prob=args.mixup_switch_prob, prob=args.mixup_prob,
                                label_smoothing=args.smoothing, mixup_off_epoch=args.mixup_off_epoch)
        naflex_collate = NaFlexBatchCollate(choices, variable_patch, channels_last, mixup, args.seed, samples)
        collate_fn = drop_missing(naflex_collate) if isinstance(collate_fn, DropMissing) else naflex_collate
        reference = float(args.batch_size)  # timm: NaFlex scales the LR and the loss from --batch-size
        description = (f'NaFlex sequence lengths {seq_lens} with batch sizes {list(sampler.batch_sizes)}, patch '
                       f'sizes {[p[0] for p in patches]}, {len(sampler) // num_processes} batches/epoch per process')
        loss_mode, soft = args.naflex_loss_scale, mixup is not None
    loader = DataLoader(samples, batch_sampler=sampler, collate_fn=collate_fn, **loader_kwargs(args))
    return VariableBatchLoader(loader, samples, sampler, reference, loss_mode, mode, soft, description, patch_size)
