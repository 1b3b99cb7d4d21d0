"""Knowledge distillation with --naflex-loader is refused in one line: timm's distillation tasks
take image batches [B, C, H, W] and fail on NaFlex's patch-sequence dicts with any teacher."""
import pytest
import timm
import torch

from timm_multilabel import UserError, create_task
from timm_multilabel.training.args import check_args, parse_args

NAFLEX_TINY = dict(num_classes=10, embed_dim=32, depth=1, num_heads=2, patch_size=8)


@pytest.mark.parametrize('kind', ['logit', 'feature', 'token'])
def test_kd_with_naflex_is_refused_in_one_line(kind):
    args, _ = parse_args(['--model', 'naflexvit_base_patch16_gap', '--naflex-loader', '--kd-model-name', 'teacher',
                          '--kd-distill-type', kind])
    with pytest.raises(UserError, match=r"^--kd-model-name cannot be combined with --naflex-loader: timm's "
                                        r"distillation tasks give the teacher the image batch") as e:
        check_args(args)
    assert '\n' not in str(e.value)


def test_kd_without_naflex_is_accepted():
    args, _ = parse_args(['--model', 'test_resnet', '--kd-model-name', 'teacher', '--train-img-sizes', '16', '24'])
    check_args(args)


@pytest.mark.parametrize('teacher', ['test_resnet', 'naflexvit_base_patch16_gap'])
def test_timms_logit_distillation_fails_on_a_naflex_batch(teacher):
    """Why the refusal: the NaFlex student takes the dict, timm's task does not (a NaFlex teacher too).
    When timm learns to, this test fails and the refusal can go."""
    torch.manual_seed(0)
    kwargs = NAFLEX_TINY if teacher.startswith('naflex') else dict(num_classes=10)
    student = timm.create_model('naflexvit_base_patch16_gap', **NAFLEX_TINY)
    batch = {'patches': torch.randn(2, 4, 8 * 8 * 3),
             'patch_coord': torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).expand(2, 4, 2),
             'patch_valid': torch.ones(2, 4, dtype=torch.bool)}
    assert student(batch).shape == (2, 10)
    task = create_task('logit_distillation', model=student, teacher=timm.create_model(teacher, **kwargs),
                       criterion=torch.nn.CrossEntropyLoss(), device=torch.device('cpu'))
    with pytest.raises((AttributeError, TypeError)):
        task(batch, torch.tensor([1, 2]))
