"""Scheduled resolution (--train-img-sizes ...) and NaFlex (--naflex-*) training: schedules, sharding,
seeded samples and exact resume at the loader, timm's LR and loss scales, refusals; end to end (slow)."""
import argparse
import json
import math
from collections import Counter

import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import BatchSamplerShard, skip_first_batches
from conftest import kill_when

from timm_multilabel.data import create_dataset
from timm_multilabel.data.digits_grid import DigitsGrid
from timm_multilabel.errors import UserError
from timm_multilabel.relabel.digit_maps import write_oracle_maps
from timm_multilabel.training.args import check_args, parse_args
from timm_multilabel.training.loaders import train_transform_kwargs
from timm_multilabel.training.relabel import build_relabel_training
from timm_multilabel.training.resume import TrainState
from timm_multilabel.training.variable_batches import (
    batch_loss_scale, build_variable_batches, naflex_batch_sizes, naflex_patch_size)

N = 64
DATA_CONFIG = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation='bilinear', crop_pct=1.0)


def _args(*argv):
    args, _ = parse_args(['--seed', '1', '--workers', '0', *argv])
    check_args(args)
    return args


def _loader(*argv, processes=1, dataset=None, collate=None, model=None):
    args = _args(*argv)
    ds = dataset if dataset is not None else create_dataset('digits-grid', split='train', seed=1, num_samples=N)
    return build_variable_batches(args, ds, train_transform_kwargs(args, DATA_CONFIG), collate, processes, 10,
                                  model=model)


class _PatchModel(torch.nn.Module):
    """Stands in for a NaFlex model where only its patch size matters."""

    def __init__(self, patch=8, interpolator=True):
        super().__init__()
        self.embeds = argparse.Namespace(enable_patch_interpolator=interpolator)
        self.patch = patch

    def get_patch_size(self):
        return (self.patch, self.patch)


SCHEDULED = ('--train-img-sizes', '16', '24', '32', '--train-batch-sizes', '8', '6', '4',
             '--train-size-probs', '1', '1', '2')


def test_scheduled_batches_have_the_schedules_sizes_and_batch_sizes():
    vb = _loader(*SCHEDULED)
    sampler = vb.batch_sampler
    assert vb.reference_batch_size == pytest.approx((8 + 6 + 2 * 4) / 4)  # timm's policy average
    orders = []
    for epoch in (0, 1):
        vb.set_epoch(epoch)
        shapes = [(images.shape[-1], images.shape[0]) for images, _ in vb.loader]
        assert all(images_hw in ((16, 8), (24, 6), (32, 4)) for images_hw in shapes)
        # the epoch's batches are exactly the sampler's schedule (shuffled): same sizes, same counts
        assert Counter(shapes) == Counter(((16, 24, 32)[c], b) for c, b in sampler.schedule)
        assert sum(b for _, b in shapes) <= N and len(shapes) == len(vb.loader) == len(sampler.schedule)
        items = [i for batch in sampler for i, _ in batch]
        assert len(items) == len(set(items))  # each sample at most once an epoch
        orders.append(items)
    assert orders[0] != orders[1]


def test_every_process_trains_on_the_same_shape_at_each_step():
    vb = _loader(*SCHEDULED, processes=2)
    vb.set_epoch(3)
    ranks = [list(BatchSamplerShard(vb.batch_sampler, num_processes=2, process_index=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(vb.batch_sampler) // 2
    for a, b in zip(*ranks):
        assert len(a) == len(b) and a[0][1] == b[0][1]  # same batch size, same image size
        assert not {i for i, _ in a} & {i for i, _ in b}
    # the schedule is one process's share: its average is the policy average per process
    assert sum(len(batch) for batch in ranks[0]) <= N // 2


def test_progressive_schedule_moves_from_the_first_size_to_the_last_under_sharding():
    vb = _loader('--train-img-sizes', '16', '24', '32', '--train-size-schedule', 'progressive',
                 '--train-size-schedule-spread', '0', '--train-size-random-mix', '0', '--epochs', '3', '-b', '8',
                 processes=2)
    for epoch, choice in ((0, 0), (1, 1), (2, 2)):
        vb.set_epoch(epoch)  # Accelerate's own set_epoch does not reach the schedule of a sharded loader
        rank1 = list(BatchSamplerShard(vb.batch_sampler, num_processes=2, process_index=1))
        assert rank1 and {c for batch in rank1 for _, c in batch} == {choice}


def test_a_resumed_epoch_loads_the_same_batches_for_any_workers():
    batches = {}
    for workers in (0, 1):
        vb = _loader(*SCHEDULED, '--mixup', '0.2', '--workers', str(workers))
        vb.set_epoch(2)
        full = list(vb.loader)
        vb.set_epoch(2)
        tail = list(skip_first_batches(vb.loader, 3))  # what --resume runs mid-epoch
        assert len(tail) == len(full) - 3
        for (xa, ya), (xb, yb) in zip(full[3:], tail):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        batches[workers] = full
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[0], batches[1]))


def test_epoch_length_flags_reach_the_schedule():
    vb = _loader(*SCHEDULED, '--train-batches-per-epoch', '5', processes=2)
    assert len(vb.batch_sampler) == 2 * 5  # 5 batches an epoch for each process, as timm's num_batches
    vb.set_epoch(0)
    items = [i for batch in vb.batch_sampler for i, _ in batch]
    assert len(items) == len(set(items))  # fresh passes (copies), not the same samples cycled again
    vb = _loader(*SCHEDULED, '--epoch-repeats', '2')
    vb.set_epoch(0)
    items = [i for batch in vb.batch_sampler for i, _ in batch]
    assert sum(b for _, b in vb.batch_sampler.schedule) > N and max(items) < 2 * N  # two passes: copies 0 and 1
    assert Counter(i % N for i in items).most_common(1)[0][1] <= 2
    first, second = vb.dataset[(3, 0)], vb.dataset[(N + 3, 0)]  # image 3, twice: its own draws each time
    assert first[1] == second[1] and not torch.equal(first[0], second[0])


def test_aug_repeats_give_each_process_its_timm_list_with_the_same_shape_per_step():
    vb = _loader(*SCHEDULED, '--aug-repeats', '2', processes=2)
    vb.set_epoch(1)
    ranks = [list(BatchSamplerShard(vb.batch_sampler, num_processes=2, process_index=r)) for r in (0, 1)]
    for a, b in zip(*ranks):
        assert [c for _, c in a] == [c for _, c in b]
        # R = 2 on 2 processes (timm's RepeatAugSampler): the two repeats of an image, one on each process,
        # as different copies (their own augmentation draws)
        assert [i % N for i, _ in a] == [i % N for i, _ in b] and all(i != j for (i, _), (j, _) in zip(a, b))
    assert sum(len(batch) for batch in ranks[0]) <= math.ceil(N / 2)  # timm: N / num_replicas selected a rank
    first = ranks[0][0][0]
    assert vb.dataset[first][1] == vb.dataset[(first[0] % N, first[1])][1]  # copies read the same image


def test_relabel_targets_do_not_depend_on_the_scheduled_size(tmp_path):
    train_set = DigitsGrid('train', num_samples=N, seed=1)
    maps = write_oracle_maps(train_set, tmp_path / 'maps')
    args = _args('--relabel-maps', str(maps), *SCHEDULED)
    boxed, collate = build_relabel_training(args, train_set, train_transform_kwargs(args, DATA_CONFIG), 10)
    vb = _loader('--relabel-maps', str(maps), *SCHEDULED, dataset=boxed, collate=collate)
    vb.set_epoch(1)
    small, large = vb.dataset[(5, 0)], vb.dataset[(5, 2)]
    batch = vb.dataset.__getitems__([(5, 0), (9, 0)])  # how the DataLoader fetches: the same draws
    assert torch.equal(batch[0][0], small[0]) and torch.equal(batch[1][0], vb.dataset[(9, 0)][0])
    assert small[0].shape[-1] == 16 and large[0].shape[-1] == 32
    assert torch.equal(small[1]['box'], large[1]['box'])  # the sample's crop is drawn the same at any size
    for images, targets in vb.loader:
        assert targets.shape == (images.shape[0], 10) and torch.allclose(targets.sum(1), torch.ones(len(targets)))


def test_lr_is_scaled_from_the_policy_average_batch_like_timm():
    import train
    vb = _loader('--train-img-sizes', '16', '32', '--train-batch-sizes', '8', '4', '--train-size-probs', '1', '3')
    assert vb.reference_batch_size == pytest.approx(5.0)  # 0.25 * 8 + 0.75 * 4
    args = argparse.Namespace(lr=None, lr_base=0.1, lr_base_size=256, lr_base_scale='', opt='sgd', batch_size=128,
                              grad_accum_steps=2)
    assert train.scaled_lr(args, 2, vb.reference_batch_size) == pytest.approx(0.1 * 5 * 2 * 2 / 256)
    args.opt = 'adamw'  # timm: sqrt scaling for adaptive optimizers
    assert train.scaled_lr(args, 2, vb.reference_batch_size) == pytest.approx(0.1 * math.sqrt(20 / 256))
    assert train.scaled_lr(args, 2) == pytest.approx(0.1 * math.sqrt(128 * 4 / 256))  # fixed batches: --batch-size
    naflex = _loader('--naflex-loader', '--naflex-train-seq-lens', '4', '16', '-b', '8', model=_PatchModel())
    assert naflex.reference_batch_size == 8.0  # timm: NaFlex scales from --batch-size


def test_loss_scale_is_batch_over_reference_or_its_sqrt():
    assert batch_loss_scale(6, 12.0, 'linear') == 0.5
    assert batch_loss_scale(6, 12.0, 'sqrt') == pytest.approx(math.sqrt(0.5))
    assert batch_loss_scale(6, 12.0, 'none') == 1.0
    vb = _loader(*SCHEDULED, '--variable-batch-loss-scale', 'sqrt')
    assert vb.loss_scale(torch.zeros(8, 3, 16, 16)) == pytest.approx(math.sqrt(8 / 5.5))
    assert vb.loss_scale({'patches': torch.zeros(11, 4, 192)}) == pytest.approx(math.sqrt(11 / 5.5))


def test_train_step_scales_the_gradient_by_the_loss_scale():
    import train
    from timm_multilabel import create_task
    accelerator = Accelerator(cpu=True)
    args = _args()  # every flag at its default: no clipping, no channels_last
    batch = (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    steps = {}
    for scale in (None, 0.25):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        before = model.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        task = create_task('classification', model=model, criterion=torch.nn.CrossEntropyLoss())
        scheduler = argparse.Namespace(step_update=lambda num_updates: None)
        loss = train.train_step(batch, TrainState(), task, optimizer, scheduler, accelerator, args,
                                loss_scale=None if scale is None else (lambda images, s=scale: s))
        steps[scale] = (model.weight.detach() - before, loss.item())
    assert torch.allclose(steps[0.25][0], 0.25 * steps[None][0], atol=1e-7)
    assert steps[0.25][1] == pytest.approx(steps[None][1])  # the logged loss is the unscaled one, as in timm


NAFLEX = ('--naflex-loader', '--naflex-train-seq-lens', '4', '16', '--naflex-max-seq-len', '16', '-b', '8')


def test_naflex_batches_have_timms_token_budget_and_cover_the_epoch():
    assert naflex_batch_sizes(8, [4, 16]) == [32, 8]  # 8 * 16 tokens a batch, floored to multiples of 8
    assert naflex_batch_sizes(5, [16, 36]) == [8, 1]  # 180 / 16 = 11.25 -> 8; 180 / 36 = 5 -> 0 -> at least 1
    vb = _loader(*NAFLEX, model=_PatchModel())
    vb.set_epoch(0)
    seen = []
    for inputs, target in vb.loader:
        b, length = inputs['patches'].shape[:2]
        assert (b, length) in ((32, 4), (8, 16)) or b < 8  # the schedule's remainder batch holds the rest
        assert inputs['patches'].shape[2] == 8 * 8 * 3 and inputs['seq_len'] == length
        assert inputs['patch_coord'].shape == (b, length, 2) and inputs['patch_valid'].shape == (b, length)
        assert target.shape == (b,)
    items = [i for batch in vb.batch_sampler for i, _ in batch]
    assert sorted(items) == list(range(N))  # every sample exactly once an epoch (timm's NaFlex loader too)


def test_naflex_patch_layout_channels_first_is_the_transposed_channels_last():
    patches = {}
    for extra in ((), ('--naflex-patchify-channels-first',)):
        vb = _loader(*NAFLEX, *extra, model=_PatchModel())
        vb.set_epoch(0)
        inputs, _ = next(iter(vb.loader))
        patches[bool(extra)] = inputs['patches']
    b, length = patches[False].shape[:2]
    as_cpp = patches[False].view(b, length, 8, 8, 3).permute(0, 1, 4, 2, 3).reshape(b, length, -1)
    assert torch.equal(as_cpp, patches[True])


def test_naflex_mixup_is_seeded_per_batch_and_variable_patch_sizes_are_drawn_per_batch():
    vb = _loader(*NAFLEX, '--mixup', '0.8', '--cutmix', '1.0', '--naflex-patch-sizes', '8', '16',
                 model=_PatchModel())
    assert vb.soft_targets
    runs = []
    for _ in range(2):
        vb.set_epoch(1)
        runs.append(list(vb.loader))
    for (xa, ya), (xb, yb) in zip(*runs):
        assert torch.equal(xa['patches'], xb['patches']) and torch.equal(ya, yb)
        assert ya.shape == (xa['patches'].shape[0], 10) and torch.allclose(ya.sum(1), torch.ones(len(ya)))
    assert {x['patches'].shape[2] for x, _ in runs[0]} == {8, 16}  # [B, L, Ph, Pw, C] with both patch sizes


def test_naflex_eval_loader_pads_to_max_seq_len():
    from timm_multilabel.evaluation import IndexedDataset
    from timm_multilabel.training.variable_batches import create_naflex_eval_loader
    args = _args(*NAFLEX)
    ds = create_dataset('digits-grid', split='test', seed=1, num_samples=10)
    loader = create_naflex_eval_loader(ds, args, (8, 8), DATA_CONFIG, IndexedDataset, batch_size=4)
    shapes = [(x['patches'].shape, y.tolist(), i.tolist()) for x, y, i in loader]
    assert [s[0] for s in shapes] == [(4, 16, 192), (4, 16, 192), (2, 16, 192)]
    assert sum((s[2] for s in shapes), []) == list(range(10))


@pytest.mark.parametrize('argv,message', [
    (['--naflex-loader', '--train-img-sizes', '16'], 'alternative loader modes'),
    (['--naflex-max-seq-len', '256'], '--naflex-max-seq-len applies to the NaFlex loader; add --naflex-loader'),
    (['--train-batch-sizes', '8'], r'--train-batch-sizes applies to scheduled resolutions \(--train-img-sizes\); add'),
    (['--naflex-loader', '--variable-batch-loss-scale', 'sqrt'], 'NaFlex batches take --naflex-loss-scale'),
    (['--naflex-loader', '--train-size-probs', '1'], r'resolutions \(--train-img-sizes\)$'),
    (['--train-img-sizes', '16', '24', '--train-batch-sizes', '8'], '1 values for 2 --train-img-sizes'),
    (['--train-img-sizes', '16', '--train-size-schedule', 'progressive'], 'give two or more --train-img-sizes'),
    (['--train-img-sizes', '16', '24', '--train-size-random-mix', '0.5'], 'applies to --train-size-schedule prog'),
    (['--train-img-sizes', '16', '24', '--train-size-probs', '0', '0'], 'weights must be finite, >= 0'),
    (['--train-img-sizes', '16', '24', '--train-batch-sizes', '8', '5', '--mixup', '0.2'], 'need even batch sizes'),
    (['--train-img-sizes', '16', '--use-multi-epochs-loader'], 'cannot be combined with --train-img-sizes'),
    (['--naflex-loader', '--channels-last'], 'NaFlex inputs are patch sequences'),
    (['--naflex-loader', '--save-images'], '--save-images cannot be combined with --naflex-loader'),
    (['--naflex-loader', '--mixup', '0.2', '--mixup-mode', 'pair'], "no 'pair' or 'elem' mode"),
    (['--naflex-loader', '--cutmix', '1', '--cutmix-minmax', '0.2', '0.8'], 'cannot be combined with --naflex'),
    (['--naflex-loader', '--naflex-patch-size-probs', '1'], '--naflex-patch-sizes'),
    (['--naflex-loader', '--relabel-maps', 'x'], 'cannot be combined with --relabel-maps'),
])
def test_meaningless_combinations_are_refused_in_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        _args(*argv)
    assert '\n' not in str(e.value)


def test_naflex_needs_a_model_that_takes_patches():
    with pytest.raises(UserError, match='test_resnet does not take NaFlex patch sequences'):
        naflex_patch_size(torch.nn.Linear(2, 2), 'test_resnet')
    with pytest.raises(UserError, match='enable_patch_interpolator=True'):
        naflex_patch_size(_PatchModel(interpolator=False), 'naflexvit_x', [8, 16])
    assert naflex_patch_size(_PatchModel(interpolator=False), 'naflexvit_x', [8]) == (8, 8)


TINY_NAFLEX = ['--model', 'naflexvit_base_patch16_gap', '--model-kwargs', 'embed_dim=32', 'depth=1', 'num_heads=2',
               'patch_size=8', '--train-num-samples', '96', '--val-num-samples', '32', '--workers', '0', '--seed', '3',
               *NAFLEX, '--log-interval', '1000', '--checkpoint-hist', '1']


@pytest.mark.slow
def test_naflex_vit_trains_and_evaluates_with_mile(tmp_path):
    import train
    summary = train.main([*TINY_NAFLEX, '--epochs', '1', '--mixup', '0.8', '--mile', '--mile-kt', '2', '--mile-ks', '1',
                          '--output', str(tmp_path / 'out')])
    args = _args(*NAFLEX)
    vb = build_variable_batches(args, create_dataset('digits-grid', split='train', seed=3, num_samples=96),
                                train_transform_kwargs(args, DATA_CONFIG), None, 1, 10, model=_PatchModel())
    assert summary['num_updates'] == len(vb.batch_sampler) and summary['eval_samples'] == 32
    assert summary['mile']['generation'] >= 1 and summary['metrics']['top1'] is not None


TINY = ['--model', 'test_resnet', '--train-num-samples', '64', '--val-num-samples', '16', '--workers', '0',
        '--seed', '3', '--log-interval', '1000', '--checkpoint-hist', '1', '--deterministic']


@pytest.mark.slow
def test_scheduled_sizes_resume_mid_epoch_exactly(tmp_path, run):
    full, part = tmp_path / 'full', tmp_path / 'part'
    argv = [*TINY, '--epochs', '2', '--train-img-sizes', '16', '24', '32', '--train-batch-sizes', '16', '12', '8',
            '--train-size-schedule', 'progressive', '--variable-batch-loss-scale', 'linear', '--mixup', '0.2']
    env = {'OMP_NUM_THREADS': '1'}  # tiny convolutions: one thread each is fastest on the shared CPUs
    run(['train.py', *argv, '--output', full], env=env)
    part_argv = [*argv, '--checkpoint-every', '3']  # --workers: the loader-level test above
    kill_when(['train.py', *part_argv, '--output', part], lambda: (part / 'last.pth.tar').exists(), env=env,
              what='train.py')
    progress = torch.load(part / 'last.pth.tar', weights_only=True)['epoch_progress']
    assert progress['batches'] == 3
    run(['train.py', *part_argv, '--output', part, '--resume', part], env=env)
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics'] and a['num_updates'] == b['num_updates']
    wa = torch.load(full / 'last.pth.tar', weights_only=True)['state_dict']
    wb = torch.load(part / 'last.pth.tar', weights_only=True)['state_dict']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_naflex_under_two_processes_shards_the_schedule_and_counts_every_test_sample_once(tmp_path, run):
    out = tmp_path / 'out'
    run(['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
         '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29523',
         'train.py', *TINY_NAFLEX, '--val-num-samples', '33', '--epochs', '1', '--output', out],
        env={'OMP_NUM_THREADS': '1'})
    summary = json.loads((out / 'summary.json').read_text())
    args = _args(*NAFLEX)
    vb = build_variable_batches(args, create_dataset('digits-grid', split='train', seed=3, num_samples=96),
                                train_transform_kwargs(args, DATA_CONFIG), None, 2, 10, model=_PatchModel())
    assert summary['world_size'] == 2 and summary['num_updates'] == len(vb.batch_sampler) // 2
    assert summary['eval_samples'] == summary['test_size'] == 33
