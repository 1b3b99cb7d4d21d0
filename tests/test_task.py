"""The loop protocol of every task (LoopTask) and the resume state (TrainState, RunCheckpoints,
resume_run), without train.py."""
import random
from argparse import Namespace

import pytest
import torch
import torch.nn as nn
from accelerate import Accelerator
from timm.scheduler import create_scheduler_v2

from timm_multilabel import UserError, create_task
from timm_multilabel.mile import MILeTask
from timm_multilabel.task import ClassificationTask, LoopTask
from timm_multilabel.training.checkpoint import CheckpointKeeper
from timm_multilabel.training.resume import RunCheckpoints, TrainState, resume_run


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


class _Wrapper(nn.Module):
    """Stands in for DDP: the bare model is ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_loop_task_defaults_do_nothing():
    task = ClassificationTask(_model(), criterion=nn.CrossEntropyLoss(), verbose=False)
    assert isinstance(task, LoopTask)
    assert task.after_update() is None and task.attach_optimizer(None) is None
    assert task.log_state() == {}
    assert task.name == 'classification'


def test_classification_task_loss_is_the_criterion_of_the_model_output():
    model = _model()
    task = create_task('classification', model=model, criterion=nn.CrossEntropyLoss())
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    out = task(x, y)
    assert out['loss'].item() == pytest.approx(nn.functional.cross_entropy(model(x), y).item())


def test_ema_copies_the_bare_model_not_its_wrapper():
    model = _model()
    task = ClassificationTask(_Wrapper(model), criterion=nn.CrossEntropyLoss(), verbose=False)
    ema = task.setup_ema(decay=0.5)
    assert task.has_ema() and not isinstance(ema.module, _Wrapper)
    assert torch.equal(ema.module[1].weight, model[1].weight)
    with torch.no_grad():
        model[1].weight.add_(2.0)
    before = ema.module[1].weight.clone()
    task.update_ema(step=5)  # past timm's first update (which copies the weights)
    assert torch.allclose(ema.module[1].weight, 0.5 * before + 0.5 * model[1].weight)


def test_mile_after_update_is_its_schedule_step_and_logs_generation_and_phase():
    task = MILeTask(_model(), kt=2, ks=1, rho=0.5, verbose=False)
    phases = []
    for _ in range(6):
        phases.append(task.log_state()['phase'])
        task.after_update()
    assert phases == ['teacher', 'teacher', 'student', 'teacher', 'teacher', 'student']
    assert task.log_state() == {'generation': 2, 'phase': 'teacher', 'labels_per_image': None}
    assert task.name == 'mile'


def test_mile_logs_the_teachers_labels_per_image_of_the_last_student_phase():
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2., 0.], [-2., 0.], [0., -3.]]))
    task = MILeTask(lin, kt=1, ks=2, rho=0.25, verbose=False)
    task.after_update()  # teacher = lin; sigmoid of rows [1, 0] and [0, 1] > 0.25: 2 and 2 classes
    task(torch.tensor([[1., 0.], [0., 1.]]), torch.tensor([0, 1]))
    task(torch.tensor([[1., 0.]]), torch.tensor([0]))
    assert task.log_state()['labels_per_image'] == pytest.approx(6 / 3)
    state = task.get_task_state()
    restored = MILeTask(nn.Linear(2, 3, bias=False), kt=1, ks=2, rho=0.25, verbose=False)
    restored.load_task_state(state)
    assert restored.labels_per_image == pytest.approx(2.0)  # resumes with the same count
    task.after_update()
    task.after_update()  # the next student phase starts counting afresh
    task.after_update()
    assert task.log_state()['labels_per_image'] is None


def test_train_state_totals_finished_epochs():
    state = TrainState(history=[{'epoch_seconds': 1.5}, {'epoch_seconds': 2.0}, {}])
    assert state.total('epoch_seconds') == 3.5
    assert TrainState().total('epoch_seconds') == 0


def _run_parts(tmp_path, updates=2):
    """A task trained ``updates`` SGD steps, its optimizer, scheduler and keeper."""
    task = MILeTask(_model(), kt=2, ks=1, rho=0.5, verbose=False)
    optimizer = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.1, momentum=0.9)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=4, warmup_epochs=0,
                                       updates_per_epoch=4, step_on_epochs=False)
    task.attach_optimizer(optimizer)
    gen = torch.Generator().manual_seed(1)
    for step in range(updates):
        x, y = torch.randn(4, 3, 2, 2, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        task(x, y)['loss'].backward()
        optimizer.step()
        optimizer.zero_grad()
        task.after_update()
        scheduler.step_update(num_updates=step + 1)
    keeper = CheckpointKeeper(tmp_path, max_history=2)
    return task, optimizer, scheduler, keeper


def test_epoch_checkpoint_round_trip(tmp_path):
    task, optimizer, scheduler, keeper = _run_parts(tmp_path)
    args = Namespace(model='tiny')
    state = TrainState(epoch=0, num_updates=2, history=[{'epoch': 0, 'top1': 50.0}])
    RunCheckpoints(Accelerator(cpu=True), keeper, task, optimizer, scheduler, args).save_epoch(state, metric=50.0)
    assert (tmp_path / 'checkpoint-0.pth.tar').is_file() and (tmp_path / 'model_best.pth.tar').is_file()

    fresh, fresh_opt, fresh_sched, fresh_keeper = _run_parts(tmp_path, updates=0)
    resumed = resume_run(str(tmp_path), fresh, fresh_opt, fresh_sched, fresh_keeper, process_index=0,
                         batches_per_epoch=4, updates_per_epoch=4)
    assert resumed == TrainState(epoch=1, num_updates=2, history=[{'epoch': 0, 'top1': 50.0}], epoch_progress=None)
    for a, b in zip(task.get_trainable_module().parameters(), fresh.get_trainable_module().parameters()):
        assert torch.equal(a, b)
    assert fresh.state_summary() == task.state_summary()  # MILe: student phase, teacher restored
    assert torch.equal(fresh.teacher[1].weight, task.teacher[1].weight)
    assert fresh_opt.state_dict()['state'][0]['momentum_buffer'].equal(optimizer.state_dict()['state'][0]['momentum_buffer'])
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert fresh_keeper.best_epoch == 0 and fresh_keeper.best_metric == 50.0


def test_mid_epoch_checkpoint_records_the_unfinished_epoch_and_this_ranks_rng(tmp_path):
    task, optimizer, scheduler, keeper = _run_parts(tmp_path)
    checkpoints = RunCheckpoints(Accelerator(cpu=True), keeper, task, optimizer, scheduler, Namespace(model='tiny'))
    random.seed(7)
    torch.manual_seed(7)
    checkpoints.save_mid_epoch(TrainState(epoch=2, num_updates=3), {'batches': 3, 'loss_sum': 1.0, 'loss_count': 3})
    expected = (random.random(), torch.rand(1))
    assert not (tmp_path / 'checkpoint-2.pth.tar').exists()

    fresh, fresh_opt, fresh_sched, fresh_keeper = _run_parts(tmp_path, updates=0)
    resumed = resume_run(str(tmp_path / 'last.pth.tar'), fresh, fresh_opt, fresh_sched, fresh_keeper,
                         process_index=0, batches_per_epoch=4, updates_per_epoch=4)
    assert resumed.epoch == 2 and resumed.num_updates == 3  # 'epoch' in the file is the last finished one (1)
    assert resumed.epoch_progress['batches'] == 3 and 'rng' in resumed.epoch_progress
    assert (random.random(), torch.rand(1)) == expected  # the RNG continues where the checkpoint was taken

    with pytest.raises(UserError, match='3 batches into epoch 2, which has only 3 batches'):
        resume_run(str(tmp_path), fresh, fresh_opt, fresh_sched, fresh_keeper, process_index=0,
                   batches_per_epoch=3, updates_per_epoch=3)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    task, optimizer, scheduler, keeper = _run_parts(tmp_path)
    RunCheckpoints(Accelerator(cpu=True), keeper, task, optimizer, scheduler, Namespace(model='tiny')).save_epoch(
        TrainState(), metric=1.0)
    other = MILeTask(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), kt=2, ks=1, rho=0.5, verbose=False)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(UserError, match=r'checkpoint .*last.pth.tar: does not fit this run \(') as e:
        resume_run(str(tmp_path), other, opt, scheduler, keeper, process_index=0, batches_per_epoch=4,
                   updates_per_epoch=4)
    assert '\n' not in str(e.value)
