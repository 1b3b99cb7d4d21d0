"""--pretrained-path FILE as timm's train.py loads it (model_setup.pretrained_kwargs): the file's
backbone, never its classifier (timm's pretrained_cfg_overlay num_classes=-1), whatever the class
counts; a missing file refused in one line."""
import pytest
import timm
import torch
from safetensors.torch import save_file

from timm_multilabel import UserError
from timm_multilabel.training import model_setup
from timm_multilabel.training.args import check_args, parse_args


def _flags(*argv):
    args, _ = parse_args(['--model', 'test_resnet', *argv])
    check_args(args)
    return args


def _saved(tmp_path, classes, name):
    """A test_resnet with a ``classes``-way head saved as train.py saves checkpoints (or safetensors)."""
    torch.manual_seed(7)
    source = timm.create_model('test_resnet', num_classes=classes)
    path = tmp_path / name
    if name.endswith('.safetensors'):
        save_file(source.state_dict(), str(path))
    else:
        torch.save({'epoch': 0, 'arch': 'test_resnet', 'state_dict': source.state_dict()}, path)
    return source, path


def _create(args, num_classes, seed=0):
    torch.manual_seed(seed)
    return model_setup.create_train_model(args, num_classes, **model_setup.pretrained_kwargs(args))


@pytest.mark.parametrize('file_classes,num_classes,name', [
    (5, 10, 'five.pth.tar'),  # counts differ (and differ from the model's default 1000)
    (5, 1000, 'five.safetensors'),  # --num-classes = the pretrained_cfg's 1000: loading fc failed (size mismatch)
    (1000, 1000, 'same.pth.tar'),  # same counts: timm still starts a new head; ours loaded the file's
])
def test_backbone_from_the_file_and_a_new_head(tmp_path, file_classes, num_classes, name):
    source, path = _saved(tmp_path, file_classes, name)
    args = _flags('--pretrained-path', str(path))
    model = _create(args, num_classes)
    torch.manual_seed(0)
    fresh = timm.create_model('test_resnet', num_classes=num_classes)  # the same initialization, no file
    assert model.num_classes == num_classes
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith('fc.'):  # timm's head adaptation: the new model's own initialization
            assert torch.equal(value, fresh.state_dict()[key]), key
        else:
            assert torch.equal(value, expected[key]), key
    assert not torch.equal(model.conv1[0].weight, fresh.conv1[0].weight)


def test_pretrained_kwargs_and_a_missing_file(tmp_path):
    assert model_setup.pretrained_kwargs(_flags()) == {'pretrained': False}
    assert model_setup.pretrained_kwargs(_flags('--pretrained')) == {'pretrained': True}
    _, path = _saved(tmp_path, 5, 'w.pth.tar')
    assert model_setup.pretrained_kwargs(_flags('--pretrained-path', str(path))) == {
        'pretrained': True, 'pretrained_cfg_overlay': {'file': str(path), 'num_classes': -1}}
    with pytest.raises(UserError, match=r'^--pretrained-path .*missing.pth: no such file$'):
        model_setup.pretrained_kwargs(_flags('--pretrained-path', str(tmp_path / 'missing.pth')))


def test_a_file_of_another_model_is_refused_in_one_line(tmp_path):
    path = tmp_path / 'efficientnet.pth'
    torch.save(timm.create_model('test_efficientnet').state_dict(), path)
    with pytest.raises(UserError, match=r'^--pretrained-path .*efficientnet.pth: cannot load it into test_resnet '
                                        r'\(size mismatch for ') as e:
        _create(_flags('--pretrained-path', str(path)), 10)
    assert '\n' not in str(e.value)
