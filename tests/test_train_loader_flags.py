"""timm's loader flags in train.py (training/loaders.py): repeated augmentation under Accelerate, epoch
repeats, batches per epoch, augmentation splits + JSD, --tta, worker seeding, pin memory, and the
jitter / grayscale / blur probabilities."""
import csv
import json
import random
import textwrap

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from PIL import Image
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torchvision import transforms

from timm_multilabel import UserError
from timm_multilabel.data.seeded import SeededSamples
from timm_multilabel.training import loaders
from timm_multilabel.training.args import check_args, loss_kwargs, loss_name, parse_args
from timm_multilabel.training.evaluate import evaluate, tta_reduce

TINY = ['--dataset', 'digits-grid', '--model', 'test_resnet', '--val-num-samples', '16', '--workers', '0',
        '--img-size', '16', '--seed', '5']


class TimmOrder(loaders.RepeatAugBatches):
    """The permutation timm's RepeatAugSampler draws (seeded by the epoch alone)."""

    def permutation(self, epoch, pass_index):
        return torch.randperm(self.num_images, generator=torch.Generator().manual_seed(epoch))


@pytest.mark.parametrize('n,world,repeats', [(300, 2, 3), (100, 3, 2), (90, 2, 2.5), (257, 4, 3)])
def test_repeat_aug_ranks_get_timms_lists_through_accelerates_sharding(n, world, repeats):
    b = 8
    sampler = TimmOrder(n, b, num_replicas=world, num_repeats=repeats)
    sampler.set_epoch(3)
    batches_per_rank = sampler.num_selected_samples // b
    items = list(sampler)
    assert len(items) == len(sampler) == batches_per_rank * b * world
    for rank in range(world):
        timm_sampler = RepeatAugSampler(range(n), num_replicas=world, rank=rank, num_repeats=repeats)
        timm_sampler.set_epoch(3)
        expected = list(timm_sampler)[:batches_per_rank * b]
        # what Accelerate's prepare gives this rank: whole batches dealt round-robin
        shard = BatchSamplerShard(BatchSampler(sampler, b, drop_last=True), num_processes=world, process_index=rank)
        got = [i for batch in shard for i in batch]
        assert [i % n for i in got] == expected
        assert got == sampler.rank_items(rank)
    # every showing of an image is its own copy (its own augmentation seed), none twice
    assert len(set(items)) == len(items)
    if float(repeats).is_integer():  # timm's layout: the R repeats of an image go to R consecutive ranks
        first = [sampler.rank_items(r)[0] for r in range(world)]
        assert len({i % n for i in first[:int(repeats)]}) == 1 and len({i // n for i in first[:int(repeats)]}) == \
            min(world, int(repeats))


def test_repeat_aug_order_follows_seed_and_epoch():
    a = loaders.RepeatAugBatches(64, 4, num_replicas=2, num_repeats=2, seed=1)
    b = loaders.RepeatAugBatches(64, 4, num_replicas=2, num_repeats=2, seed=2)
    assert list(a) != list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


def test_repeat_aug_with_batches_per_epoch_continues_with_new_copies():
    # 20 images, 2 repeats, 1 rank: timm selects 20 items a pass (10 images twice); 7 batches of 4 = 28 items
    s = loaders.RepeatAugBatches(20, 4, num_replicas=1, num_repeats=2, seed=0, num_batches=7)
    items = list(s)
    assert len(items) == 28 and len(set(items)) == 28
    assert {i // 20 for i in items[:20]} == {0, 1} and {i // 20 for i in items[20:]} <= {2, 3}
    assert s.copies == 4


class Draws(Dataset):
    """Item i: (its index, a draw of each global generator timm's transforms use)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([i, random.random(), np.random.rand(), torch.rand(()).item()], dtype=torch.float64)


def test_copies_of_an_image_draw_their_own_augmentation():
    samples = SeededSamples(loaders.Copies(Draws(5), 3), seed=0)
    assert len(samples) == 15
    a, b, again = samples[2], samples[7], samples[2]
    assert a[0] == b[0] == 2  # the same image ...
    assert not torch.equal(a[1:], b[1:]) and torch.equal(a, again)  # ... drawn differently per copy, repeatably


def test_epoch_passes_repeat_the_data_with_fresh_shuffles():
    s = loaders.EpochPasses(10, 25, seed=4)  # --epoch-repeats 2.5 on 10 images
    items = list(s)
    assert len(items) == len(s) == 25 and s.copies == 3
    assert sorted(items[:10]) == list(range(10)) and sorted(items[10:20]) == list(range(10, 20))
    assert all(20 <= i < 30 for i in items[20:])
    assert [i - 10 for i in items[10:20]] != items[:10]  # a fresh shuffle each pass
    s.set_epoch(1)
    assert list(s) != items
    s.set_epoch(0)
    assert list(s) == items


def _args(argv):
    args, _ = parse_args(['--dataset', 'digits-grid', *argv])
    return args


@pytest.mark.parametrize('argv,world,batches', [
    ([], 1, 100 // 8),
    (['--epoch-repeats', '2.5'], 1, 250 // 8),
    (['--epoch-repeats', '2.5'], 2, 250 // 8 // 2),
    (['--train-batches-per-epoch', '40'], 2, 40),
    (['--aug-repeats', '3'], 1, 100 // 8),  # timm: ceil(100 / 1) items a rank (N < 256)
    (['--aug-repeats', '3'], 2, 50 // 8),
])
def test_batches_per_epoch_per_process(argv, world, batches):
    args = _args(['-b', '8', '--workers', '0', *argv])
    train = loaders.build_train_loader(args, Draws(100), None, world)
    if world == 1:
        assert len(train.loader) == batches
    else:  # Accelerate's sharding of the batches
        shard = BatchSamplerShard(train.loader.batch_sampler, num_processes=world, process_index=1)
        assert len(shard) == batches and len(list(shard)) == batches


def test_an_epoch_shorter_than_a_batch_per_process_is_refused():
    args = _args(['-b', '8', '--workers', '0', '--aug-repeats', '3'])
    with pytest.raises(UserError, match='fewer than one batch'):
        loaders.build_train_loader(args, Draws(20), None, 4)  # ceil(20 / 4) = 5 items a rank


def test_schedule_counts_the_repeated_batches(tmp_path):
    """--epoch-repeats 2.5 on 64 samples, batch 16: ceil(160) // 16 = 10 updates an epoch, 20 in 2 epochs;
    the per-update cosine is half-way (lr / 2) after the first epoch only if its length counts them."""
    import train
    out = tmp_path / 'run'
    summary = train.main([*TINY, '--train-num-samples', '64', '-b', '16', '--epochs', '2', '--epoch-repeats', '2.5',
                          '--lr', '0.01', '--warmup-epochs', '0', '--sched', 'cosine', '--sched-on-updates',
                          '--min-lr', '0', '--output', str(out)])
    assert summary['num_updates'] == 20
    rows = list(csv.DictReader(open(out / 'summary.csv')))
    assert [int(r['num_updates']) for r in rows] == [10, 20]
    assert float(rows[0]['lr']) == pytest.approx(0.005, rel=1e-6)


def test_aug_splits_layout_and_resplit_keeps_the_clean_split_unerased():
    class Flat(Dataset):  # one flat grey image; random erasing ('const') writes zeros
        transform = None

        def __len__(self):
            return 4

        def __getitem__(self, i):
            img = Image.new('RGB', (24, 24), (200, 200, 200))
            return (self.transform(img) if self.transform else img), i

    def samples(resplit):
        args = _args(['--aug-splits', '3', '--reprob', '1', '--remode', 'const', '--scale', '1', '1', '--hflip', '0',
                      '--color-jitter', '0', *(['--resplit'] if resplit else [])])
        check_args(args)
        kwargs = loaders.train_transform_kwargs(args, {'input_size': (3, 16, 16), 'mean': (0.5,) * 3,
                                                       'std': (0.5,) * 3})
        ds = loaders.set_train_transform(Flat(), args, kwargs)
        return [SeededSamples(ds, 0)[i] for i in range(4)]

    for resplit in (False, True):
        batch = samples(resplit)
        images, targets = loaders.aug_split_collate(batch)
        assert images.shape == (12, 3, 16, 16) and targets.tolist() == [0, 1, 2, 3] * 3
        for j in range(3):  # split j of sample i is row j * B + i, as timm's fast_collate
            for i in range(4):
                assert torch.equal(images[j * 4 + i], batch[i][0][j])
        erased = (images == 0).all(dim=1).flatten(1).any(dim=1).view(3, 4)
        assert erased[1:].all()  # the augmented splits are always erased (reprob 1)
        assert erased[0].any() != resplit  # the clean split only without --resplit


def test_jsd_loss_is_timms_on_the_split_batch():
    from timm.loss import JsdCrossEntropy

    from timm_multilabel import create_loss
    args = _args(['--aug-splits', '3', '--jsd-loss', '--smoothing', '0.1'])
    check_args(args)
    loss = create_loss(loss_name(args), **loss_kwargs(args, soft_targets=False))
    assert isinstance(loss, JsdCrossEntropy) and loss.num_splits == 3
    torch.manual_seed(0)
    logits, target = torch.randn(12, 5), torch.tensor([1, 4, 0, 2] * 3)
    assert loss(logits, target).item() == pytest.approx(JsdCrossEntropy(3, smoothing=0.1)(logits, target).item())


@pytest.mark.parametrize('argv,message', [
    (['--jsd-loss'], 'add --aug-splits'),
    (['--jsd-loss', '--aug-splits', '2', '--mile'], 'cannot be combined with --mile'),
    (['--aug-splits', '2', '--relabel-maps', 'x'], 'cannot be combined with --relabel-maps'),
    (['--aug-splits', '2', '--mixup', '0.2'], 'Mixup/CutMix'),
    (['--aug-splits', '2', '--no-aug'], 'no augmentation to split'),
    (['--resplit'], 'add --aug-splits'),
    (['--epoch-repeats', '0.5'], r'must be 0 \(off\) or >= 1'),
    (['--aug-repeats', '0.5'], r'must be 0 \(off\) or >= 1'),
    (['--epoch-repeats', '2', '--train-batches-per-epoch', '3'], 'give one'),
    (['--worker-seeding', 'none'], 'expected all or part'),
    (['--tta', '11'], 'at most 10'),
])
def test_meaningless_loader_combinations_are_refused_in_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        check_args(_args(argv))
    assert '\n' not in str(e.value)


def test_tta_reduce_is_the_mean_of_each_group():
    out = torch.arange(24, dtype=torch.float32).view(6, 4)
    assert torch.equal(tta_reduce(out, 3), torch.stack([out[0:3].mean(0), out[3:6].mean(0)]))


class _NoGather:
    @staticmethod
    def gather_for_metrics(tensors):
        return tensors


def test_evaluate_scores_the_mean_of_the_views():
    """3 views an image; the model's output is the view's pixel value as the class-0 logit. Image 0's
    views (2, -1, -4) average to -1 (class 1), though the first view alone says class 0; image 1's
    (-2, 1, 4) average to +1 (class 0)."""
    class Model(torch.nn.Module):
        def forward(self, x):  # [B, 1, 1, 1] -> [B, 2]
            v = x.flatten(1)[:, :1]
            return torch.cat([v, torch.zeros_like(v)], dim=1)

    views = torch.tensor([[2., -1., -4.], [-2., 1., 4.]]).view(2, 3, 1, 1, 1)
    loader = [(views, torch.tensor([1, 0]), torch.tensor([0, 1]))]
    metrics = evaluate(Model(), loader, _NoGather, None, 'softmax', tta=3)
    assert metrics['top1'] == 100.0 and metrics['eval_samples'] == 2
    assert evaluate(Model(), [(views[:, 0], torch.tensor([1, 0]), torch.tensor([0, 1]))], _NoGather, None,
                    'softmax')['top1'] == 0.0  # the first views alone get both wrong


def test_tta_views_are_center_flip_and_corners():
    from timm.data import create_transform
    t = create_transform(16, is_training=False, crop_pct=0.5, interpolation='bilinear', mean=(0,) * 3, std=(1,) * 3)
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 60, 3), dtype=np.uint8))
    views = [v(img) for v in loaders.tta_views(t, 10)]
    resized = transforms.ToTensor()(transforms.Resize(32)(img))  # shorter side 16 / 0.5, then the crops
    h, w = resized.shape[1:]
    assert torch.equal(views[0], t(img)) and torch.equal(views[1], views[0].flip(-1))
    corners = [resized[:, :16, :16], resized[:, :16, w - 16:], resized[:, h - 16:, :16], resized[:, h - 16:, w - 16:]]
    for k, corner in enumerate(corners):
        assert torch.allclose(views[2 + k], corner) and torch.allclose(views[6 + k], corner.flip(-1))


def test_eval_loader_holds_the_views_of_each_image():
    from timm.data import create_transform

    class Pics(Dataset):
        transform = None

        def __len__(self):
            return 5

        def __getitem__(self, i):
            img = Image.new('RGB', (20, 20), (i * 40, 0, 0))
            return (self.transform(img) if self.transform else img), i

    args = _args(['--tta', '2', '-vb', '4', '--workers', '0'])
    loader = loaders.build_eval_loader(args, Pics(), create_transform(16, is_training=False))
    images, labels, index = next(iter(loader))
    assert images.shape == (2, 2, 3, 16, 16) and labels.tolist() == [0, 1] and index.tolist() == [0, 1]
    assert torch.equal(images[:, 1], images[:, 0].flip(-1))


def test_jitter_grayscale_and_blur_probabilities_reach_both_training_transforms():
    from timm_multilabel.relabel.transforms import create_box_transform
    args = _args(['--color-jitter', '0.4', '--color-jitter-prob', '0.3', '--grayscale-prob', '0.2',
                  '--gaussian-blur-prob', '0.1'])
    kwargs = loaders.train_transform_kwargs(args, {'input_size': (3, 32, 32), 'mean': (0.5,) * 3, 'std': (0.5,) * 3})

    class Plain:
        transform = None

    plain = loaders.set_train_transform(Plain(), args, kwargs).transform.transforms
    box = create_box_transform(**kwargs).secondary.transforms
    for steps in (plain, box):
        gray = [t for t in steps if isinstance(t, transforms.RandomGrayscale)]
        applied = {type(t.transforms[0]).__name__: t.p for t in steps if isinstance(t, transforms.RandomApply)}
        assert [t.p for t in gray] == [0.2] and applied == {'ColorJitter': 0.3, 'GaussianBlur': 0.1}


class NumpyDraws(Dataset):
    """Item: a numpy draw that no SeededSamples reseeds (what --worker-seeding reaches), and the worker's seed."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return np.random.rand(), torch.utils.data.get_worker_info().seed


@pytest.mark.parametrize('mode', ['all', 'part'])
def test_worker_seeding_is_timms(mode):
    """'all': numpy in each worker is reseeded from the worker's torch seed (timm's _worker_init); 'part':
    numpy keeps the seed torch's DataLoader gave it."""
    args = _args(['--workers', '2', '--worker-seeding', mode])
    kwargs = {**loaders.loader_kwargs(args), 'persistent_workers': False}
    for draw, seed in DataLoader(NumpyDraws(), batch_size=None, **kwargs):
        reseeded = np.random.RandomState(int(seed) % (2 ** 32 - 1)).rand()
        assert (float(draw) == reseeded) == (mode == 'all')


@pytest.mark.parametrize('flag', [[], ['--pin-mem']])
def test_pin_memory_follows_the_flag(flag):
    args = _args(['-b', '8', '--workers', '0', *flag])
    assert loaders.build_train_loader(args, Draws(16), None, 1).loader.pin_memory == bool(flag)
    assert loaders.build_eval_loader(args, Draws(16), lambda x: x).pin_memory == bool(flag)
    config = loaders.dataloader_config(args)  # pinned batches go to a GPU without blocking, as timm's
    assert config.non_blocking == bool(flag) and config.use_seedable_sampler and config.data_seed == args.seed


def _kill_at_first_checkpoint(argv, out):
    from conftest import kill_when
    kill_when(['train.py', *argv, '--output', out], lambda: (out / 'last.pth.tar').exists(), what='train.py')


@pytest.mark.slow
def test_mid_epoch_resume_is_exact_with_the_sampler_flags(tmp_path, run):
    """--aug-repeats 2 with --train-batches-per-epoch 12 (batch 8: 96 items, timm selects 64 a pass, so 2
    passes of fresh copies), stopped after 3 updates and resumed: the same weights as a run never stopped.
    (The plain --epoch-repeats / --train-batches-per-epoch sampler resumes through the same
    skip_first_batches: test_two_processes_see_their_own_indices.)"""
    flags, per_epoch = ['--aug-repeats', '2', '--train-batches-per-epoch', '12', '-b', '8', '--checkpoint-every', '3'], 12
    argv = [*TINY, '--train-num-samples', '64', '--epochs', '1', *flags]
    full, part = tmp_path / 'full', tmp_path / 'part'
    run(['train.py', *argv, '--output', full])
    _kill_at_first_checkpoint(argv, part)
    progress = torch.load(part / 'last.pth.tar', weights_only=True)['epoch_progress']
    assert 0 < progress['batches'] < per_epoch  # stopped inside an epoch
    run(['train.py', *argv, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['num_updates'] == b['num_updates'] == per_epoch
    assert a['metrics'] == b['metrics']
    wa = torch.load(full / 'last.pth.tar', weights_only=True)['state_dict']
    wb = torch.load(part / 'last.pth.tar', weights_only=True)['state_dict']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


_RANKS_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from timm_multilabel.training import loaders
    from timm_multilabel.training.args import parse_args

    class Ids(torch.utils.data.Dataset):
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return torch.tensor(i)

    acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=3))
    out = {}
    for flags in (['--aug-repeats', '2'], ['--train-batches-per-epoch', '3']):
        args, _ = parse_args(['--dataset', 'digits-grid', '-b', '4', '--workers', '0', '--seed', '3', *flags])
        train = loaders.build_train_loader(args, Ids(), None, acc.num_processes)
        sampler = train.loader.sampler
        loader = acc.prepare(train.loader)
        out[flags[0]] = {}
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            out[flags[0]][epoch] = {'images': [i for b in loader for i in b.tolist()],
                                    'resumed': [i for b in acc.skip_first_batches(loader, 2) for i in b.tolist()],
                                    'all_items': list(sampler)}
            if hasattr(sampler, 'rank_items'):
                out[flags[0]][epoch]['rank_items'] = sampler.rank_items(acc.process_index)
    json.dump(out, open(f'{sys.argv[1]}/rank{acc.process_index}.json', 'w'))
''')


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_see_their_own_indices(tmp_path, run, repo_root):
    """Under accelerate launch with 2 processes: --aug-repeats 2 gives each rank timm's list (both ranks the
    same images in the same order, as different copies); --train-batches-per-epoch 3 gives each rank 3
    batches, the two ranks together the first 24 items of the shuffled stream; skipping 2 batches (a
    mid-epoch resume) gives the rest of the epoch."""
    script = tmp_path / 'ranks.py'
    script.write_text(_RANKS_SCRIPT)
    run(['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
         '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29527', script, tmp_path],
        env={'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(repo_root)})
    both = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    for flag in ('--aug-repeats', '--train-batches-per-epoch'):
        ranks = [r[flag] for r in both]
        for epoch in ('0', '1'):
            seen = [r[epoch]['images'] for r in ranks]
            for r in ranks:
                assert r[epoch]['resumed'] == r[epoch]['images'][2 * 4:]
            if flag == '--aug-repeats':
                # 40 images, 2 repeats, 2 ranks: timm selects ceil(40 / 2) = 20 items a rank -> 5 batches of 4
                items = [r[epoch]['rank_items'] for r in ranks]
                assert seen[0] == [i % 40 for i in items[0]] and seen[1] == [i % 40 for i in items[1]]
                assert len(seen[0]) == 20 and seen[0] == seen[1]  # the same images ...
                assert not set(items[0]) & set(items[1])  # ... as different copies
            else:
                assert len(seen[0]) == len(seen[1]) == 3 * 4
                stream = ranks[0][epoch]['all_items']
                assert sorted(seen[0] + seen[1]) == sorted(i % 40 for i in stream[:24])
                assert seen[0] == [i % 40 for b in range(0, 24, 8) for i in stream[b:b + 4]]  # batches 0, 2, 4
        assert ranks[0]['0']['images'] != ranks[0]['1']['images']  # a new order each epoch
