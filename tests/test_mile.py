"""MILeTask: schedule, teacher copy/freeze, pseudo-labels, resume, grad accumulation, Mixup, CLI checks."""
import argparse
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import Mixup
from timm.loss import BinaryCrossEntropy
from timm.task import resume_task_checkpoint

from timm_multilabel import UserError, create_task
from timm_multilabel.mile import (
    DEFAULT_KS, DEFAULT_KT, DEFAULT_RHO, MILeTask, add_mile_arguments, check_mile_args, mile_kwargs_from_args,
)

C = 5  # classes


def eq1(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. 1: BCE summed over classes, averaged over samples."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction='none').sum(1).mean()


def test_default_loss_is_eq1_by_hand():
    # L = -1/B sum_i sum_c [y log s(z) + (1 - y) log(1 - s(z))], the official rescale_sigmoid=True
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 0.], [0., -2.], [0.5, 0.5]]))
    task = MILeTask(lin, kt=4, ks=1, verbose=False)
    x = torch.tensor([[1., 1.], [2., 0.]])
    logits = [[1.0, -2.0, 1.0], [2.0, 0.0, 1.0]]
    labels = [0, 2]
    total = 0.0
    for row, y in zip(logits, labels):
        for c, z in enumerate(row):
            s = 1 / (1 + math.exp(-z))
            total -= math.log(s) if c == y else math.log(1 - s)
    loss = task(x, torch.tensor(labels))['loss'].item()
    assert loss == pytest.approx(total / 2, rel=1e-6)
    # the per-class mean (torch's and timm's default reduction) is C = 3 times smaller
    assert F.binary_cross_entropy_with_logits(lin(x), F.one_hot(torch.tensor(labels), 3).float()).item() == \
        pytest.approx(total / 6, rel=1e-6)


def mlp(seed: int = 0) -> nn.Module:
    """Tiny model with BatchNorm, so train/eval mode changes the teacher's outputs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, C))


def batches(n: int, batch_size: int = 8, seed: int = 123):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 6, generator=g), torch.randint(0, C, (batch_size,), generator=g))
            for _ in range(n)]


def sgd(task: MILeTask) -> torch.optim.Optimizer:
    return torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def train_update(task, optimizer, x, y):
    out = task(x, y)
    out['loss'].backward()
    optimizer.step()
    optimizer.zero_grad()
    return out


def clone_state(module: nn.Module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ schedule

def test_phase_schedule_kt3_ks2():
    task = MILeTask(mlp(), kt=3, ks=2, verbose=False)
    phases, gens, switched = [], [], []
    for _ in range(12):
        phases.append(task.phase[0])
        gens.append(task.generation)
        switched.append(task.step())
    assert ''.join(phases) == 'tttssttts' 'stt'
    assert gens == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    # switches after updates 3 (-> student), 5 (-> teacher), 8, 10
    assert [i + 1 for i, s in enumerate(switched) if s] == [3, 5, 8, 10]
    assert (task.updates, task.updates_in_phase, task.phase, task.generation) == (12, 2, 'teacher', 2)
    assert task.state_summary()['generation'] == 2 and task.state_summary()['phase'] == 'teacher'


def test_phase_schedule_kt1_ks1_alternates():
    task = MILeTask(mlp(), kt=1, ks=1, verbose=False)
    phases = []
    for _ in range(6):
        phases.append(task.phase)
        task.step()
    assert phases == ['teacher', 'student'] * 3
    assert task.generation == 3


# ----------------------------------------------------------------- teacher copy / frozen

def test_teacher_is_model_at_switch_and_frozen_during_student_phase():
    model = mlp()
    task = MILeTask(model, kt=2, ks=3, verbose=False)
    task.train()
    opt = sgd(task)
    data = batches(10)
    assert task.teacher is None
    for x, y in data[:2]:
        train_update(task, opt, x, y)
        at_switch = clone_state(model)
        task.step()
    assert task.phase == 'student'
    teacher = task.teacher
    assert states_equal(clone_state(teacher), at_switch)
    assert teacher is not model and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    ptrs = [p.data_ptr() for p in teacher.parameters()]

    for x, y in data[2:5]:
        train_update(task, opt, x, y)
        task.train()  # a loop calling task.train() must not put the teacher in training mode
        assert not teacher.training
        assert states_equal(clone_state(teacher), at_switch)  # BN running stats included
        task.step()
    assert not states_equal(clone_state(model), at_switch)  # the student did train
    assert task.phase == 'teacher' and task.generation == 1

    for x, y in data[5:7]:
        train_update(task, opt, x, y)
        at_switch2 = clone_state(model)
        task.step()
    assert task.phase == 'student'
    assert task.teacher is teacher and [p.data_ptr() for p in teacher.parameters()] == ptrs  # storage reused
    assert states_equal(clone_state(teacher), at_switch2)
    assert not states_equal(at_switch, at_switch2)


def test_student_targets_hand_computed():
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2., 0.], [-2., 0.], [0., -3.]]))
    task = MILeTask(lin, kt=1, ks=5, rho=0.25, verbose=False)
    task.step()  # the teacher phase ends: teacher = lin as set above
    x = torch.tensor([[1., 0.], [0., 1.]])
    # logits [2, -2, 0] -> sigmoid [.88, .12, .5]; [0, 0, -3] -> [.5, .5, .047]; rho = .25
    expected = torch.tensor([[1., 0., 1.], [1., 1., 0.]])
    with torch.no_grad():
        lin.weight.add_(5.)  # the student moves; the teacher must not
    out = task(x, torch.tensor([1, 2]))
    assert torch.equal(out['target'], expected)
    assert torch.equal(task.pseudo_labels(x), expected)
    assert torch.allclose(out['loss'], eq1(x @ lin.weight.T, expected))  # default criterion: Eq. 1
    assert out['loss'].requires_grad

    keep = MILeTask(lin, kt=1, ks=5, rho=0.25, keep_labels=True, verbose=False)
    with torch.no_grad():
        lin.weight.sub_(5.)
    keep.step()
    # label 1 ORed into row 0; row 1 is unlabeled (-1): the teacher's labels only
    out = keep(x, torch.tensor([1, -1]))
    assert torch.equal(out['target'], torch.tensor([[1., 1., 1.], [1., 1., 0.]]))
    # dense targets: element-wise max
    out = keep(x, torch.tensor([[0., 0.7, 0.3], [0., 0., 0.2]]))
    assert torch.allclose(out['target'], torch.tensor([[1., 0.7, 1.], [1., 1., 0.2]]))


def test_student_targets_equal_thresholded_saved_teacher():
    model = mlp()
    task = MILeTask(model, kt=3, ks=3, rho=0.4, verbose=False)
    task.train()
    opt = sgd(task)
    data = batches(6)
    for x, y in data[:3]:
        train_update(task, opt, x, y)
        saved = clone_state(model)
        task.step()
    independent = mlp(seed=7)
    independent.load_state_dict(saved)
    independent.eval()
    for x, y in data[3:]:
        with torch.no_grad():
            expected = (torch.sigmoid(independent(x)) > 0.4).float()
        out = train_update(task, opt, x, y)
        assert torch.equal(out['target'], expected)
        assert not torch.equal(expected, F.one_hot(y, C).float())
        assert (expected.sum(1) > 1).any()  # multi-label pseudo-labels
        task.step()


# ------------------------------------------------------------------------------ resume

def test_resume_mid_student_phase_is_exact(tmp_path):
    kt, ks, total, stop = 3, 2, 12, 4  # stop after update 4: student phase, 1 update into it
    data = batches(total)

    def run(task, opt, lo, hi, log):
        for x, y in data[lo:hi]:
            log.append((task.phase, task.generation))
            train_update(task, opt, x, y)
            task.step()

    ref_task = MILeTask(mlp(), kt=kt, ks=ks, verbose=False)
    ref_task.train()
    ref_opt = sgd(ref_task)
    ref_log = []
    run(ref_task, ref_opt, 0, stop, ref_log)
    teacher_at_stop = clone_state(ref_task.teacher)
    run(ref_task, ref_opt, stop, total, ref_log)

    task = MILeTask(mlp(), kt=kt, ks=ks, verbose=False)
    task.train()
    opt = sgd(task)
    log = []
    run(task, opt, 0, stop, log)
    assert (task.phase, task.updates_in_phase) == ('student', 1)
    path = tmp_path / 'ckpt.pth.tar'
    torch.save({**task.get_checkpoint_state(), 'optimizer': opt.state_dict()}, path)

    fresh = MILeTask(mlp(seed=99), kt=kt, ks=ks, verbose=False)
    fresh.train()
    fresh_opt = sgd(fresh)
    resume_task_checkpoint(fresh, str(path), optimizer=fresh_opt, log_info=False)
    assert fresh.state_summary() == task.state_summary()
    assert states_equal(clone_state(fresh.teacher), teacher_at_stop)
    assert not fresh.teacher.training and not any(p.requires_grad for p in fresh.teacher.parameters())
    run(fresh, fresh_opt, stop, total, log)

    assert log == ref_log
    assert fresh.state_summary() == ref_task.state_summary()
    assert states_equal(clone_state(fresh.get_trainable_module()), clone_state(ref_task.get_trainable_module()))
    assert states_equal(clone_state(fresh.teacher), clone_state(ref_task.teacher))


def test_checkpoint_state_roundtrip_and_mismatch():
    task = MILeTask(mlp(), kt=2, ks=2, rho=0.3, verbose=False)
    state = task.get_task_state()
    assert state['phase'] == 'teacher' and 'teacher' not in state  # no teacher weights in teacher phase
    task.step()
    task.step()
    state = task.get_task_state()
    assert state['phase'] == 'student' and state['teacher'].keys() == task.teacher.state_dict().keys()
    assert task.get_task_state(ema=True) == {}

    other = MILeTask(mlp(seed=3), kt=5, ks=2, rho=0.3, verbose=False)
    with pytest.raises(UserError, match='kt=2'):
        other.load_task_state(state)
    other.load_task_state(state, strict=False)  # this task's kt wins, counters carry on
    assert (other.kt, other.phase, other.updates) == (5, 'student', 2)
    broken = {k: v for k, v in state.items() if k != 'teacher'}
    with pytest.raises(UserError, match='teacher'):
        MILeTask(mlp(), kt=2, ks=2, rho=0.3, verbose=False).load_task_state(broken)


# ------------------------------------------------------------------- grad accumulation

def test_grad_accumulation_counts_updates_not_micro_batches():
    model = mlp()
    task = MILeTask(model, kt=2, ks=1, verbose=False)
    task.train()
    opt = sgd(task)
    data = batches(12, batch_size=4)
    phases = []
    accum = 2
    for i, (x, y) in enumerate(data):
        phases.append(task.phase[0])
        (task(x, y)['loss'] / accum).backward()
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()
            if task.phase == 'teacher' and task.updates_in_phase == task.kt - 1:
                at_switch = clone_state(model)
            task.step()
            if task.phase == 'student':
                assert states_equal(clone_state(task.teacher), at_switch)
    assert ''.join(phases) == 'tttt' 'ss' 'tttt' 'ss'
    assert (task.updates, task.generation) == (6, 2)


# ------------------------------------------------------------------------------- Mixup

def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, C))


def test_mile_with_mixup_dense_targets():
    model = convnet()
    task = MILeTask(model, kt=1, ks=2, rho=0.3, num_classes=C, verbose=False)
    task.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=C)
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    xm, ym = mixup(x, y)
    assert ym.shape == (4, C) and not torch.equal(ym, F.one_hot(y, C).float())
    out = train_update(task, opt, xm, ym)
    assert torch.equal(out['target'], ym)  # teacher phase: Mixup's dense targets as they are
    assert torch.allclose(out['loss'], eq1(out['output'], ym))
    saved = clone_state(model)
    task.step()

    independent = convnet(seed=5)
    independent.load_state_dict(saved)
    independent.eval()
    x2, y2 = mixup(torch.randn(4, 3, 16, 16), torch.tensor([4, 3, 2, 1]))
    with torch.no_grad():
        expected = (torch.sigmoid(independent(x2)) > 0.3).float()
    out = task(x2, y2)
    assert torch.equal(out['target'], expected)  # student: teacher's labels on the same mixed batch
    assert not torch.equal(out['target'], y2)


# -------------------------------------------------------------------- unlabeled samples

@pytest.mark.parametrize('criterion,reference', [
    (None, eq1), (BinaryCrossEntropy(smoothing=0., sum_classes=True), eq1),
    (BinaryCrossEntropy(smoothing=0.), F.binary_cross_entropy_with_logits),
    (lambda o, t: F.binary_cross_entropy_with_logits(o, t), F.binary_cross_entropy_with_logits)],
    ids=['default', 'timm_bce_sum', 'timm_bce', 'callable'])
def test_unlabeled_samples_masked_in_teacher_phase(criterion, reference):
    model = mlp()
    model.eval()
    task = MILeTask(model, kt=2, ks=2, criterion=criterion, verbose=False)
    x = torch.randn(3, 6)
    out = task(x, torch.tensor([2, -1, 0]))
    assert torch.equal(out['target'], torch.tensor([[0., 0., 1., 0., 0.], [0.] * 5, [1., 0., 0., 0., 0.]]))
    logits = model(x)
    expected = reference(logits[[0, 2]], out['target'][[0, 2]])
    assert torch.allclose(out['loss'], expected)

    out = task(x, torch.tensor([-1, -1, -1]))
    assert out['loss'].item() == 0. and out['loss'].requires_grad
    out['loss'].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_unlabeled_samples_use_pseudo_labels_in_student_phase():
    model = mlp()
    model.eval()
    task = MILeTask(model, kt=1, ks=2, rho=0.5, verbose=False)
    task.step()
    x = torch.randn(4, 6)
    out = task(x, torch.full((4,), -1))
    with torch.no_grad():
        expected = (torch.sigmoid(model(x)) > 0.5).float()
    assert torch.equal(out['target'], expected)


# ------------------------------------------------------------------ state exclusion etc.

def test_teacher_not_in_modules_parameters_or_checkpoints():
    model = mlp()
    task = MILeTask(model, kt=1, ks=1, verbose=False)
    task.step()
    assert task.teacher is not None
    assert task.get_trainable_module() is model
    assert not any('teacher' in k for k in task.state_dict())
    assert {id(p) for p in task.parameters()} == {id(p) for p in model.parameters()}
    assert task.get_checkpoint_state()['state_dict'].keys() == model.state_dict().keys()
    assert task.get_checkpoint_state()['task_state']['teacher'].keys() == model.state_dict().keys()
    task.to(torch.float64)  # the unregistered teacher follows the task's conversions
    assert all(p.dtype == torch.float64 for p in task.teacher.parameters())
    assert task.dtype == torch.float64


def test_registry_factory():
    task = create_task('mile', model=mlp(), kt=4, ks=2, rho=0.1, keep_labels=True, verbose=False)
    assert isinstance(task, MILeTask)
    assert (task.kt, task.ks, task.rho, task.keep_labels) == (4, 2, 0.1, True)


def test_prepare_distributed_copies_unwrapped_model(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    if not dist.is_available():
        pytest.skip('torch.distributed not available')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = mlp()
        task = MILeTask(model, kt=1, ks=1, verbose=False).prepare_distributed()
        assert isinstance(task.get_trainable_module(), DDP)
        task.train()
        opt = sgd(task)
        x, y = batches(1)[0]
        train_update(task, opt, x, y)
        task.step()
        assert task.teacher.state_dict().keys() == model.state_dict().keys()  # no 'module.' prefix
        assert states_equal(clone_state(task.teacher), clone_state(model))
        assert task.get_checkpoint_state()['state_dict'].keys() == model.state_dict().keys()
        train_update(task, opt, x, y)  # a student update through DDP
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize('kwargs', [
    dict(kt=0, ks=1), dict(kt=1, ks=0), dict(kt=1.5, ks=1), dict(kt=True, ks=1), dict(kt=2, ks=-3),
    dict(kt=1, ks=1, rho=0.), dict(kt=1, ks=1, rho=1.), dict(kt=1, ks=1, rho=1.5), dict(kt=1, ks=1, rho=-0.1),
])
def test_bad_task_args_raise_user_error(kwargs):
    with pytest.raises(UserError):
        MILeTask(mlp(), verbose=False, **kwargs)


def cli_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument('--smoothing', type=float, default=0.0)
    parser.add_argument('--jsd-loss', action='store_true')
    add_mile_arguments(parser)
    return parser


def test_cli_args_defaults_and_values():
    args = cli_parser().parse_args(['--mile'])
    check_mile_args(args)
    assert mile_kwargs_from_args(args) == dict(kt=DEFAULT_KT, ks=DEFAULT_KS, rho=DEFAULT_RHO, keep_labels=False,
                                               student='continue')
    assert DEFAULT_KS <= DEFAULT_KT and 0 < DEFAULT_RHO < 1
    args = cli_parser().parse_args(['--mile', '--mile-kt', '60', '--mile-ks', '30', '--mile-rho', '0.1',
                                    '--mile-keep-labels', '--mile-student', 'separate'])
    check_mile_args(args)
    assert mile_kwargs_from_args(args) == dict(kt=60, ks=30, rho=0.1, keep_labels=True, student='separate')
    check_mile_args(cli_parser().parse_args([]))  # no --mile, no --mile-* flags: fine


@pytest.mark.parametrize('argv, match', [
    (['--mile', '--mile-kt', '0'], '--mile-kt'),
    (['--mile', '--mile-ks', '-1'], '--mile-ks'),
    (['--mile', '--mile-rho', '1'], '--mile-rho'),
    (['--mile', '--mile-rho', '0'], '--mile-rho'),
    (['--mile', '--jsd-loss'], '--jsd-loss'),
    (['--mile', '--smoothing', '0.1'], 'smoothing'),
    (['--mile-kt', '5'], 'needs --mile'),
    (['--mile-student', 'separate'], 'needs --mile'),
])
def test_cli_bad_args_raise_user_error(argv, match):
    args = cli_parser().parse_args(argv)
    with pytest.raises(UserError, match=match) as e:
        check_mile_args(args)
    assert '\n' not in str(e.value)


def test_cli_refuses_knowledge_distillation():
    args = cli_parser().parse_args(['--mile'])
    args.kd_model_name = 'resnet50'
    with pytest.raises(UserError, match='kd-model-name'):
        check_mile_args(args)


def test_teacher_runs_under_given_autocast_and_inference_mode():
    from contextlib import contextmanager
    calls = []

    @contextmanager
    def autocast():
        calls.append(torch.is_inference_mode_enabled())
        yield

    model = mlp()
    model.eval()
    task = MILeTask(model, kt=1, ks=1, autocast=autocast, verbose=False)
    x, y = batches(1)[0]
    task(x, y)
    assert calls == []  # the teacher phase has no teacher forward
    task.step()
    out = task(x, y)
    assert calls == [True]
    assert out['loss'].requires_grad and not out['target'].is_inference()


@pytest.mark.slow
def test_compile_covers_teacher():
    model = mlp()
    model.eval()
    task = MILeTask(model, kt=1, ks=1, verbose=False)
    task.compile(backend='eager')
    task.step()
    assert task._teacher.forward is not task.teacher  # compiled teacher forward
    x, y = batches(1)[0]
    with torch.no_grad():
        expected = (torch.sigmoid(model(x)) > DEFAULT_RHO).float()
    assert torch.equal(task(x, y)['target'], expected)
    assert task.get_checkpoint_state()['state_dict'].keys() == model.state_dict().keys()


# ------------------------------------------------------------ student='separate' (Algorithm 1)

def test_separate_student_returns_to_its_own_weights_and_optimizer_state():
    task = MILeTask(mlp(), kt=2, ks=2, student='separate', verbose=False)
    model = task.get_trainable_module()
    opt = sgd(task)
    task.attach_optimizer(opt)
    data = batches(12)
    # generation 0: the student is the initial network; the teacher trains a copy for kt updates
    student0 = clone_state(model)
    for x, y in data[:2]:
        train_update(task, opt, x, y)
        after = clone_state(model)
        switched = task.step()
    assert switched and task.phase == 'student'
    assert states_equal(clone_state(task.teacher), after)  # the teacher took the kt updates
    assert states_equal(clone_state(model), student0)  # the student did not
    assert not states_equal(after, student0)
    assert opt.state_dict()['state'] == {}  # the student had made no update yet: no momentum
    # student phase: imitation only; then generation 1's teacher starts from the student
    for x, y in data[2:4]:
        train_update(task, opt, x, y)
        task.step()
    student1 = clone_state(model)
    momentum1 = {k: v['momentum_buffer'].clone() for k, v in opt.state_dict()['state'].items()}
    assert task.phase == 'teacher' and task.generation == 1
    for x, y in data[4:6]:
        train_update(task, opt, x, y)
        task.step()
    assert states_equal(clone_state(model), student1)
    restored = opt.state_dict()['state']
    assert all(torch.equal(restored[k]['momentum_buffer'], m) for k, m in momentum1.items())
    assert opt.param_groups[0]['lr'] == 0.1  # learning rates are left to the scheduler


def test_continue_student_starts_from_the_teacher():
    task = MILeTask(mlp(), kt=2, ks=1, verbose=False)
    opt = sgd(task)
    for x, y in batches(2):
        train_update(task, opt, x, y)
        task.step()
    assert task.phase == 'student'
    assert states_equal(clone_state(task.get_trainable_module()), clone_state(task.teacher))


def test_separate_student_resumes_inside_a_teacher_phase(tmp_path):
    data = batches(10)

    def run(task, opt, items):
        for x, y in items:
            train_update(task, opt, x, y)
            task.step()

    full = MILeTask(mlp(), kt=3, ks=2, student='separate', verbose=False)
    full_opt = sgd(full)
    full.attach_optimizer(full_opt)
    run(full, full_opt, data)

    part = MILeTask(mlp(), kt=3, ks=2, student='separate', verbose=False)
    part_opt = sgd(part)
    part.attach_optimizer(part_opt)
    run(part, part_opt, data[:6])  # generation 1, one update into its teacher phase
    assert part.phase == 'teacher' and part.updates_in_phase == 1
    torch.save({'model': part.get_trainable_module().state_dict(), 'opt': part_opt.state_dict(),
                'task': part.get_task_state()}, tmp_path / 'ckpt.pth')
    ckpt = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert 'student_weights' in ckpt['task'] and 'student_optimizer' in ckpt['task']
    resumed = MILeTask(mlp(seed=9), kt=3, ks=2, student='separate', verbose=False)
    resumed.get_trainable_module().load_state_dict(ckpt['model'])
    resumed_opt = sgd(resumed)
    resumed_opt.load_state_dict(ckpt['opt'])
    resumed.attach_optimizer(resumed_opt)
    resumed.load_task_state(ckpt['task'])
    run(resumed, resumed_opt, data[6:])
    assert states_equal(clone_state(resumed.get_trainable_module()), clone_state(full.get_trainable_module()))
    with pytest.raises(UserError, match='student'):
        MILeTask(mlp(), kt=3, ks=2, verbose=False).load_task_state(ckpt['task'])  # other --mile-student


def test_bad_student_mode_is_refused():
    with pytest.raises(UserError, match="student must be one of continue, separate, got 'both'"):
        MILeTask(mlp(), kt=1, ks=1, student='both')

