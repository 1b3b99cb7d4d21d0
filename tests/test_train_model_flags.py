"""timm's model, device and loop flags in train.py (training/model_setup.py, distill.py, sync_bn.py):
each flag does what timm's train.py makes it do."""
import argparse
import json
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from timm_multilabel import UserError, create_task
from timm_multilabel.distill import distill_task, distill_task_kwargs, load_teacher
from timm_multilabel.training import model_setup
from timm_multilabel.training.args import check_args, parse_args
from timm_multilabel.training.sync_bn import CpuSyncBatchNorm, CpuSyncBatchNormAct


def flags(*argv):
    """train.py's parsed and checked arguments (the digits-grid defaults) for ``argv``."""
    args, _ = parse_args(list(argv))
    check_args(args)
    return args


def model_for(*argv, num_classes=10):
    return model_setup.create_train_model(flags(*argv), num_classes)


def batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


# ---------------------------------------------------------------------------------------- model creation

def test_gp_sets_the_global_pooling_type():
    assert model_for('--model', 'test_resnet').global_pool.pool_type == 'avg'
    assert model_for('--model', 'test_resnet', '--gp', 'max').global_pool.pool_type == 'max'


def test_bn_momentum_and_eps_reach_every_batchnorm():
    default = batchnorms(model_for('--model', 'test_efficientnet'))
    assert {(b.momentum, b.eps) for b in default} == {(0.1, 1e-5)}
    tuned = batchnorms(model_for('--model', 'test_efficientnet', '--bn-momentum', '0.01', '--bn-eps', '1e-4'))
    assert len(tuned) == len(default) > 5 and {(b.momentum, b.eps) for b in tuned} == {(0.01, 1e-4)}


def test_a_flag_the_model_does_not_take_is_refused_naming_it():
    with pytest.raises(UserError, match=r'^--bn-eps 0.001: test_resnet does not take bn_eps'):
        model_for('--model', 'test_resnet', '--bn-eps', '1e-3')


def test_drop_block_reaches_the_resnet_stages():
    from timm.layers import DropBlock2d
    assert not any(isinstance(m, DropBlock2d) for m in model_for('--model', 'test_resnet').modules())
    blocks = [m for m in model_for('--model', 'test_resnet', '--drop-block', '0.2').modules()
              if isinstance(m, DropBlock2d)]
    assert blocks and {b.drop_prob for b in blocks} == {0.2}


def test_drop_connect_is_the_deprecated_name_of_drop_path():
    assert model_setup.model_kwargs_from_args(flags('--drop-connect', '0.1'))['drop_path_rate'] == 0.1
    assert model_setup.model_kwargs_from_args(flags('--drop-path', '0.2'))['drop_path_rate'] == 0.2
    with pytest.raises(UserError, match='--drop-connect 0.1 and --drop-path 0.2'):
        flags('--drop-connect', '0.1', '--drop-path', '0.2')


def test_in_chans_comes_from_input_size_as_in_timm():
    model = model_for('--model', 'test_resnet', '--input-size', '1', '32', '32')
    assert model.conv1[0].in_channels == 1 if isinstance(model.conv1, torch.nn.Sequential) \
        else model.conv1.in_channels == 1
    assert model_setup.in_chans_of(flags('--in-chans', '2', '--input-size', '1', '32', '32')) == 2


def test_torchscript_creates_scriptable_layers():
    assert model_setup.create_train_model(flags('--model', 'test_resnet', '--torchscript'), 10) is not None
    with pytest.raises(UserError, match='--torchscript with --kd-model-name'):
        model_setup.check_model_flags(argparse.Namespace(torchscript=True, kd_model_name='x'))


# ---------------------------------------------------------------------------------- layers and dtype

def test_grad_checkpointing_is_switched_on():
    model = model_for('--model', 'test_resnet')
    assert model.grad_checkpointing is False
    model_setup.prepare_model_layers(model, flags('--model', 'test_resnet', '--grad-checkpointing'),
                                     torch.device('cpu'), 1)
    assert model.grad_checkpointing is True


def test_model_dtype_bfloat16_casts_parameters_and_inputs():
    args = flags('--model', 'test_resnet', '--model-dtype', 'bfloat16')
    model = model_setup.prepare_model_layers(model_setup.create_train_model(args, 10), args, torch.device('cpu'), 1)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(torch.rand(2, 3, 32, 32)).dtype == torch.bfloat16  # float32 images are cast on the way in


def test_split_bn_keeps_one_batchnorm_per_augmentation_split():
    from timm.layers import SplitBatchNorm2d
    args = flags('--model', 'test_resnet', '--split-bn', '--aug-splits', '3')
    model = model_setup.prepare_model_layers(model_setup.create_train_model(args, 10), args, torch.device('cpu'), 1)
    split = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    assert split and all(len(m.aux_bn) == 2 for m in split)  # the main BatchNorm plus 2 auxiliary ones


def test_sync_bn_converts_only_under_several_processes():
    args = flags('--model', 'test_efficientnet', '--sync-bn')
    one = model_setup.prepare_model_layers(model_setup.create_train_model(args, 10), args, torch.device('cpu'), 1)
    assert not any(isinstance(b, torch.nn.SyncBatchNorm) for b in batchnorms(one))
    two = model_setup.prepare_model_layers(model_setup.create_train_model(args, 10), args, torch.device('cpu'), 2)
    bns = batchnorms(two)
    # timm's BatchNormAct2d keeps its activation; CPU processes get the CPU-capable subclasses
    assert bns and all(isinstance(b, (CpuSyncBatchNorm, CpuSyncBatchNormAct)) for b in bns)
    assert any(isinstance(b, CpuSyncBatchNormAct) and not isinstance(b.act, torch.nn.Identity) for b in bns)


def test_fast_norm_and_fuser_are_set(monkeypatch):
    from timm.layers import fast_norm
    monkeypatch.setattr(fast_norm, '_USE_FAST_NORM', False)  # restored after the test
    before = torch._C._jit_texpr_fuser_enabled()
    try:
        model_setup.set_global_model_flags(flags('--fast-norm', '--fuser', 'old'))
        assert fast_norm.is_fast_norm() and not torch._C._jit_texpr_fuser_enabled()
        model_setup.set_global_model_flags(flags('--fuser', 'te'))
        assert torch._C._jit_texpr_fuser_enabled()
    finally:
        torch._C._jit_set_texpr_fuser_enabled(before)
    with pytest.raises(UserError, match='--fuser bad'):
        flags('--fuser', 'bad')


# ------------------------------------------------------------------------------------ device flags

def test_device_flags_map_onto_accelerate():
    from accelerate.utils import DistributedDataParallelKwargs
    assert model_setup.accelerator_kwargs(flags('--device', 'cpu')) == dict(cpu=True, kwargs_handlers=[])
    default = model_setup.accelerator_kwargs(flags())
    assert default['cpu'] is (not torch.cuda.is_available())
    handlers = model_setup.accelerator_kwargs(flags('--no-ddp-bb'))['kwargs_handlers']
    assert len(handlers) == 1 and isinstance(handlers[0], DistributedDataParallelKwargs)
    assert handlers[0].to_kwargs() == {'broadcast_buffers': False}
    with pytest.raises(UserError, match='^--device cuda:1: Accelerate gives each process its device'):
        flags('--device', 'cuda:1')
    with pytest.raises(UserError, match='^--device-modules no_such_backend_xyz: cannot be imported'):
        model_setup.accelerator_kwargs(flags('--device-modules', 'no_such_backend_xyz'))
    if not (hasattr(torch, 'xpu') and torch.xpu.is_available()):
        with pytest.raises(UserError, match='^--device xpu: not available'):
            model_setup.accelerator_kwargs(flags('--device', 'xpu'))


# -------------------------------------------------------------------------------------- loop flags

def test_val_interval_evaluates_every_nth_epoch_and_the_last():
    assert [e for e in range(3) if model_setup.should_evaluate(e, 3, 2)] == [1, 2]
    assert [e for e in range(6) if model_setup.should_evaluate(e, 6, 4)] == [3, 5]
    assert [e for e in range(2) if model_setup.should_evaluate(e, 2, 1)] == [0, 1]


def test_recovery_interval_means_checkpoint_every():
    assert model_setup.recovery_every(flags('--recovery-interval', '3')) == 3
    assert model_setup.recovery_every(flags('--checkpoint-every', '5')) == 5
    assert model_setup.recovery_every(flags()) == 0
    with pytest.raises(UserError, match='--recovery-interval 3 and --checkpoint-every 5'):
        flags('--recovery-interval', '3', '--checkpoint-every', '5')


def test_save_batch_images_writes_one_grid(tmp_path):
    from PIL import Image
    model_setup.save_batch_images(torch.randn(4, 3, 16, 16), tmp_path / 'train-batch-0.jpg')
    image = Image.open(tmp_path / 'train-batch-0.jpg')
    assert image.format == 'JPEG' and image.size == (64, 16)  # 4 images in a row, no padding
    assert [p.name for p in tmp_path.iterdir()] == ['train-batch-0.jpg']  # no temporary file left


def test_lr_noise_cycle_and_k_decay_reach_the_scheduler():
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    args = flags('--sched', 'cosine', '--epochs', '10', '--warmup-epochs', '0', '--lr', '0.1', '--lr-k-decay', '2.0',
                 '--lr-cycle-limit', '2', '--lr-cycle-mul', '1.5',
                 '--lr-cycle-decay', '0.5', '--lr-noise', '0.2', '0.8', '--lr-noise-pct', '0.3', '--lr-noise-std', '0.5')

    def lr_at(kwargs, epoch):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, _ = create_scheduler_v2(optimizer, **kwargs, updates_per_epoch=4)
        return scheduler._get_lr(epoch if scheduler.t_in_epochs else epoch * 4)[0]

    ours = scheduler_kwargs(args)
    direct = dict(sched='cosine', num_epochs=10, warmup_epochs=0, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
                  k_decay=2.0, cycle_limit=2, cycle_mul=1.5, cycle_decay=0.5, noise=[0.2, 0.8], noise_pct=0.3,
                  noise_std=0.5, noise_seed=args.seed, step_on_epochs=not args.sched_on_updates)
    plain = dict(sched='cosine', num_epochs=10, warmup_epochs=0, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
                 step_on_epochs=not args.sched_on_updates)
    for epoch in (3, 7, 12):
        assert lr_at(ours, epoch) == pytest.approx(lr_at(direct, epoch))
    assert any(lr_at(ours, e) != pytest.approx(lr_at(plain, e)) for e in (3, 7, 12))


def test_agc_clipping_leaves_the_classifier_out():
    """--clip-mode agc clips through task.get_clip_parameters(exclude_head=True), as timm's train.py."""
    import copy

    from accelerate import Accelerator
    from timm.utils import dispatch_clip_grad

    import train
    from timm_multilabel.task import ClassificationTask
    from timm_multilabel.training.resume import TrainState

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            self.grads = [p.grad.clone() for g in self.param_groups for p in g['params']]
            return super().step(closure)

    class NoSchedule:
        def step_update(self, num_updates, metric=None):
            pass

    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=10)
    reference = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    task = ClassificationTask(model, criterion=torch.nn.CrossEntropyLoss(), verbose=False)
    optimizer = Recording(model.parameters(), lr=0.0)
    args = argparse.Namespace(channels_last=False, clip_grad=0.01, clip_mode='agc', synchronize_step=False)
    train.train_step((x, y), TrainState(), task, optimizer, NoSchedule(), Accelerator(cpu=True), args)
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    raw = [p.grad.clone() for p in reference.parameters()]
    dispatch_clip_grad(list(reference.parameters())[:-2], 0.01, mode='agc')
    expected = [p.grad for p in reference.parameters()]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(optimizer.grads, expected))
    assert torch.equal(optimizer.grads[-2], raw[-2])  # the classifier weight: not clipped
    assert any(not torch.allclose(a, b) for a, b in zip(expected[:-2], raw[:-2]))  # the rest: clipped


# ------------------------------------------------------------------------------------ distillation

@pytest.fixture(scope='module')
def teacher_folder(tmp_path_factory):
    """A test_resnet teacher with 10 classes saved as a timm model folder (config.json + weights)."""
    from timm.models import save_for_hf
    torch.manual_seed(1)
    teacher = timm.create_model('test_resnet', num_classes=10).eval()
    folder = tmp_path_factory.mktemp('teacher')
    save_for_hf(teacher, str(folder))
    return folder, teacher


def test_logit_distillation_loss_is_task_loss_plus_kl_at_temperature(teacher_folder):
    folder, teacher = teacher_folder
    args = flags('--model', 'test_resnet', '--kd-model-name', str(folder), '--kd-temperature', '2.5',
                 '--task-loss-weight', '0.3')
    torch.manual_seed(0)
    student = timm.create_model('test_resnet', num_classes=10)
    task = create_task(distill_task(args), model=student, criterion=torch.nn.CrossEntropyLoss(), num_classes=10,
                       autocast=None, device=torch.device('cpu'), **distill_task_kwargs(args))
    assert task.name == 'logit_distillation'
    task.train()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    out = task(x, y)
    with torch.no_grad():  # train mode: BatchNorm normalizes with the batch's statistics, as in the task
        s, t = student(x), teacher(x)
    T = 2.5
    p_t = F.softmax(t / T, dim=1)
    kl = (p_t * (F.log_softmax(t / T, dim=1) - F.log_softmax(s / T, dim=1))).sum(1).mean() * T * T
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * kl  # --task-loss-weight alone: distill weight 1 - 0.3
    assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.log_state() == pytest.approx({'task_loss': F.cross_entropy(s, y).item(), 'kd_loss': kl.item()},
                                             rel=1e-5)
    assert not any(p.requires_grad for p in task.teacher.parameters())


def test_teacher_with_other_classes_or_no_folder_is_refused(teacher_folder, tmp_path):
    folder, _ = teacher_folder
    with pytest.raises(UserError, match='the teacher has 10 classes, the student 5'):
        load_teacher(str(folder), timm.create_model('test_resnet', num_classes=5))
    with pytest.raises(UserError, match=r'^--kd-model-name local-dir:.*: no such folder'):
        load_teacher(f'local-dir:{tmp_path / "missing"}', timm.create_model('test_resnet', num_classes=10))


def test_kd_flags_need_a_teacher_and_their_distill_type():
    with pytest.raises(UserError, match=r'^--kd-temperature 2.0 applies to knowledge distillation'):
        flags('--kd-temperature', '2')
    with pytest.raises(UserError, match='--kd-temperature 2.0 does not apply to --kd-distill-type feature'):
        flags('--kd-model-name', 'x', '--kd-distill-type', 'feature', '--kd-temperature', '2')
    with pytest.raises(UserError, match='--kd-loss-type mse: only kl'):
        flags('--kd-model-name', 'x', '--kd-loss-type', 'mse')


def test_feature_distillation_projection_is_trained(teacher_folder):
    folder, _ = teacher_folder
    from timm.optim import create_optimizer_v2
    student = timm.create_model('test_efficientnet', num_classes=10)
    task = create_task('feature_distillation', model=student, teacher=str(folder), device=torch.device('cpu'))
    trainable = task.get_trainable_module()
    assert trainable.projection is not None  # test_efficientnet's features are wider than test_resnet's
    optimizer = create_optimizer_v2(trainable, opt='sgd', lr=0.1)
    optimized = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert all(id(p) in optimized for p in trainable.projection.parameters())
    assert not any(id(p) in optimized for p in task.teacher.parameters())


# ------------------------------------------------------------------------- several processes (gloo)

def _sync_bn_worker(rank, world, port, queue):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, 4, 4, dtype=torch.float64), torch.randn(8, 3, 4, 4, dtype=torch.float64)
    bn = CpuSyncBatchNorm(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    part = x[rank * 4:(rank + 1) * 4].clone().requires_grad_()
    out = bn(part)
    (out * w[rank * 4:(rank + 1) * 4]).sum().backward()
    # numpy arrays: a tensor in a queue is shared memory, gone when this process ends
    # --dist-bn on plain BatchNorm layers with rank-specific statistics
    reduced, broadcast = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for layer in (reduced, broadcast):
        layer.running_mean.fill_(float(rank + 1))
        layer.running_var.fill_(float(10 * (rank + 1)))
    model_setup.distribute_bn_stats(reduced, 'reduce', 2)
    model_setup.distribute_bn_stats(broadcast, 'broadcast', 2)
    queue.put((rank, *(t.detach().numpy().copy() for t in (out, part.grad, bn.running_mean, bn.running_var,
                                                           bn.weight.grad, reduced.running_mean, reduced.running_var,
                                                           broadcast.running_mean, broadcast.running_var))))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cpu_sync_batchnorm_and_dist_bn_under_two_processes():
    """Two ranks with half a batch each give what BatchNorm gives on the whole batch: outputs, input
    gradients (of the summed losses), running statistics; the weight gradients sum to BatchNorm's.
    --dist-bn reduce averages the ranks' running statistics, broadcast copies rank 0's."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    mp.start_processes(_sync_bn_worker, args=(2, port, queue), nprocs=2, join=True, start_method='spawn')
    results = sorted([(r[0], *map(torch.from_numpy, r[1:])) for r in (queue.get() for _ in range(2))],
                     key=lambda r: r[0])
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, 4, 4, dtype=torch.float64), torch.randn(8, 3, 4, 4, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x.requires_grad_()
    out = bn(x)
    (out * w).sum().backward()
    for rank, r_out, r_grad, r_mean, r_var, _, red_mean, red_var, bc_mean, bc_var in results:
        assert torch.equal(red_mean, torch.full((3,), 1.5)) and torch.equal(red_var, torch.full((3,), 15.0))
        assert torch.equal(bc_mean, torch.full((3,), 1.0)) and torch.equal(bc_var, torch.full((3,), 10.0))
        assert torch.allclose(r_out, out.detach()[rank * 4:(rank + 1) * 4])
        assert torch.allclose(r_grad, x.grad[rank * 4:(rank + 1) * 4])
        assert torch.allclose(r_mean, bn.running_mean) and torch.allclose(r_var, bn.running_var)
    assert torch.allclose(results[0][5] + results[1][5], bn.weight.grad)


def _launch_probe(run, tmp_path, *extra):
    out = tmp_path / 'out'
    probe = tmp_path / 'probe'
    probe.mkdir()
    run(['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
         '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29531',
         'tests/bn_probe_train.py', '--task', 'bn_probe', '--model', 'test_resnet', '--train-num-samples', '128',
         '--val-num-samples', '32', '-b', '16', '--workers', '0', '--epochs', '1', '--output', out, *extra],
        env={'OMP_NUM_THREADS': '1', 'BN_PROBE_DIR': str(probe)})
    return [torch.load(probe / f'rank{r}.pt', weights_only=True) for r in (0, 1)]


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sync_bn_under_two_processes_keeps_rank_statistics_equal(tmp_path, run):
    r0, r1 = _launch_probe(run, tmp_path, '--sync-bn', '--no-ddp-bb')
    assert r0['norm_types'] == r1['norm_types'] == ['CpuSyncBatchNorm'] and r0['broadcast_buffers'] is False
    assert r0['before'] and _max_diff(r0['before'], r1['before']) < 1e-5  # synchronized while training
    assert any(v.abs().max() > 0 for k, v in r0['before'].items() if k.endswith('running_mean'))  # they did train


@pytest.mark.slow
def test_train_run_with_timm_loop_flags(tmp_path, teacher_folder):
    """One train.py run: --val-interval 2 over 3 epochs, --save-images, --opt-kwargs,
    --model-ema-force-cpu, logit distillation from a local teacher folder and --torchcompile (the
    eager backend: torch.compile's graph capture without inductor's minutes of code generation)."""
    import torch._dynamo

    import train
    from safetensors.torch import load_file
    folder, _ = teacher_folder
    out = tmp_path / 'out'
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    summary = train.main(['--model', 'test_resnet', '--train-num-samples', '64', '--val-num-samples', '16', '-b', '16',
                          '--workers', '0', '--epochs', '3', '--val-interval', '2', '--save-images', '--log-interval',
                          '2', '--opt', 'adamw', '--opt-kwargs', 'amsgrad=True', '--model-ema', '--model-ema-force-cpu',
                          '--kd-model-name', str(folder), '--kd-temperature', '2', '--torchcompile', 'eager',
                          '--output', str(out)])
    # evaluated and checkpointed after epochs 1 and 2 only (epoch_p_1 % 2 == 0, and the last)
    assert sorted(p.name for p in out.glob('checkpoint-*.pth.tar')) == ['checkpoint-1.pth.tar', 'checkpoint-2.pth.tar']
    rows = list(__import__('csv').DictReader(open(out / 'summary.csv')))
    assert [r['epoch'] for r in rows] == ['0', '1', '2'] and [bool(r['eval_loss']) for r in rows] == [False, True, True]
    assert summary['num_updates'] == 3 * 4
    # 4 batches an epoch, logged at batches 0 and 2
    assert sorted(p.name for p in out.glob('train-batch-*.jpg')) == ['train-batch-0.jpg', 'train-batch-2.jpg']
    ckpt = torch.load(out / 'last.pth.tar', weights_only=False)
    assert [g['amsgrad'] for g in ckpt['optimizer']['param_groups']] == [True, True]
    assert all(v.device.type == 'cpu' for v in ckpt['state_dict_ema'].values())
    # the shipped weights are the evaluated ones: not the (unevaluated) CPU EMA
    best = torch.load(out / 'model_best.pth.tar', weights_only=False)
    shipped = load_file(out / 'model.safetensors')
    assert all(torch.equal(shipped[k], best['state_dict'][k]) for k in shipped)
    assert not all(torch.equal(shipped[k], best['state_dict_ema'][k]) for k in shipped)
    assert set(summary['logit_distillation']) == {'task_loss', 'kd_loss'} and summary['logit_distillation']['kd_loss'] > 0
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 2  # student (train, eval) and teacher compiled
    assert not any('_orig_mod' in k for k in ckpt['state_dict'])  # checkpoints hold the plain model's keys
    torch._dynamo.reset()
