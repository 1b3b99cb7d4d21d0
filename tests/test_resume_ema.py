"""--model-ema with --resume: resume_run loads the EMA through the task's own checkpoint API
(timm's load_task_ema_checkpoint), for plain classification, MILe and feature distillation (whose
EMA is a student + projection wrapper)."""
from argparse import Namespace

import pytest
import timm
import torch
from accelerate import Accelerator
from timm.scheduler import create_scheduler_v2

from timm_multilabel import create_task
from timm_multilabel.training.checkpoint import CheckpointKeeper
from timm_multilabel.training.resume import RunCheckpoints, TrainState, resume_run


@pytest.fixture(scope='module')
def teacher_folder(tmp_path_factory):
    """A 10-class test_resnet teacher (96 features) as a timm model folder, built offline."""
    from timm.models import save_for_hf
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp('teacher')
    save_for_hf(timm.create_model('test_resnet', num_classes=10).eval(), str(folder))
    return str(folder)


def _parts(kind, teacher):
    """A task with an EMA (decay 0.5) of test_efficientnet, initialized from seed 0, and its optimizer
    and scheduler."""
    torch.manual_seed(0)
    model = timm.create_model('test_efficientnet', num_classes=10)
    if kind == 'feature_distillation':  # 256 student features vs the teacher's 96: a learned projection
        task = create_task(kind, model=model, teacher=teacher, device=torch.device('cpu'))
    else:
        task = create_task(kind, model=model, criterion=torch.nn.CrossEntropyLoss(), num_classes=10)
    optimizer = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.1)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=2, updates_per_epoch=2)
    task.setup_ema(decay=0.5)
    return task, optimizer, scheduler


def _ema_tensors(task):
    """Every EMA tensor (parameters and buffers) by name; with feature distillation both the
    student's and the projection's."""
    return {k: v.clone() for k, v in task.get_trainable_module(ema=True).module.state_dict().items()}


@pytest.mark.parametrize('kind', ['classification', 'mile', 'feature_distillation'])
def test_resume_restores_the_ema_weights_saved(tmp_path, teacher_folder, kind):
    task, optimizer, scheduler = _parts(kind, teacher_folder)
    with torch.no_grad():  # an EMA unlike its initialization (the live model's copy)
        for i, p in enumerate(task.get_trainable_module(ema=True).module.parameters()):
            p.add_(0.5 + 0.01 * i)
    saved = _ema_tensors(task)
    RunCheckpoints(Accelerator(cpu=True), CheckpointKeeper(tmp_path), task, optimizer, scheduler,
                   Namespace(model='test_efficientnet')).save_epoch(TrainState(), metric=1.0)

    fresh, fresh_opt, fresh_sched = _parts(kind, teacher_folder)
    init = _ema_tensors(fresh)
    if kind == 'feature_distillation':
        assert any(k.startswith('projection.') for k in saved)  # the projection's EMA is part of the round trip
    assert any(not torch.equal(saved[k], init[k]) for k in saved)
    resume_run(str(tmp_path), fresh, fresh_opt, fresh_sched, CheckpointKeeper(tmp_path), process_index=0,
               batches_per_epoch=2, updates_per_epoch=2)
    restored = _ema_tensors(fresh)
    assert restored.keys() == saved.keys()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
    # the live model is the checkpoint's state_dict, not the EMA
    live = torch.load(tmp_path / 'last.pth.tar', weights_only=False)['state_dict']
    assert all(torch.equal(v, live[k]) for k, v in fresh.get_eval_model().state_dict().items())


def test_a_checkpoint_without_ema_starts_the_ema_from_its_weights(tmp_path, teacher_folder):
    """Resuming with --model-ema a run that had none: the EMA starts from the checkpoint's weights
    (timm's load_task_ema_checkpoint falls back to state_dict), not from the model's initialization."""
    task, optimizer, scheduler = _parts('feature_distillation', teacher_folder)
    task.trainable_module_ema = None  # the saved run had no EMA
    with torch.no_grad():
        for p in task.get_trainable_module().parameters():
            p.add_(0.25)
    RunCheckpoints(Accelerator(cpu=True), CheckpointKeeper(tmp_path), task, optimizer, scheduler,
                   Namespace(model='test_efficientnet')).save_epoch(TrainState(), metric=1.0)
    assert 'state_dict_ema' not in torch.load(tmp_path / 'last.pth.tar', weights_only=False)
    fresh, fresh_opt, fresh_sched = _parts('feature_distillation', teacher_folder)
    resume_run(str(tmp_path), fresh, fresh_opt, fresh_sched, CheckpointKeeper(tmp_path), process_index=0,
               batches_per_epoch=2, updates_per_epoch=2)
    trained = task.get_trainable_module().state_dict()  # student and projection
    restored = _ema_tensors(fresh)
    assert restored.keys() == trained.keys() and all(torch.equal(restored[k], trained[k]) for k in trained)
