"""--split-bn (timm's convert_splitbn_model) and the Hugging Face model folder: the folder holds the
plain model's weights (each BatchNorm the primary split's), which timm loads strictly; export and
evaluation read a --split-bn checkpoint the same way (hub.without_split_bn)."""
import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.layers import SplitBatchNorm2d, convert_splitbn_model

from timm_multilabel.hub import model_from_checkpoint, save_model_folder, without_split_bn


def _split_model():
    """test_resnet (10 classes) with 2 BatchNorm splits whose primary and auxiliary statistics differ."""
    torch.manual_seed(0)
    model = convert_splitbn_model(timm.create_model('test_resnet', num_classes=10), 2)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.aux_bn[0].running_mean.fill_(5.0)
            m.aux_bn[0].weight.data.fill_(-3.0)
    return model.eval()


def test_the_model_folder_of_a_split_bn_model_loads_strictly_into_the_plain_model(tmp_path):
    model = _split_model()
    assert any('.aux_bn.' in k for k in model.state_dict())
    save_model_folder(model, tmp_path, model_name='test_resnet', num_classes=10)
    saved = load_file(str(tmp_path / 'model.safetensors'))
    plain = timm.create_model('test_resnet', num_classes=10)
    assert saved.keys() == plain.state_dict().keys()
    plain.load_state_dict(saved, strict=True)
    assert torch.equal(saved['bn1.running_mean'], model.bn1.running_mean)  # the primary split's statistics
    loaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)  # eval mode: SplitBatchNorm2d uses the primary


def test_a_split_bn_checkpoint_is_read_as_the_plain_model(tmp_path):
    model = _split_model()
    torch.save({'arch': 'test_resnet', 'state_dict': model.state_dict(), 'args': {'num_classes': 10}},
               tmp_path / 'last.pth.tar')
    loaded, _ = model_from_checkpoint(tmp_path / 'last.pth.tar')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_without_split_bn_drops_only_auxiliary_batchnorm_keys():
    plain = timm.create_model('test_resnet', num_classes=10)
    state = dict(plain.state_dict())
    assert without_split_bn(state, plain) == state
    extra = {**state, 'bn1.aux_bn.0.weight': torch.ones(1), 'fc.aux_bn.0.weight': torch.ones(1)}
    # fc is no BatchNorm: its key is not a split's and stays (strict loading then names it)
    assert without_split_bn(extra, plain).keys() == {*state, 'fc.aux_bn.0.weight'}
    with pytest.raises(RuntimeError, match='fc.aux_bn.0.weight'):
        plain.load_state_dict(without_split_bn(extra, plain), strict=True)


@pytest.mark.slow
def test_train_run_with_split_bn_and_pretrained_path_ships_a_plain_folder(tmp_path):
    """train.py end to end: --aug-splits 2 --split-bn writes a folder timm loads strictly, and
    --pretrained-path starts from the file's backbone (a tiny learning rate keeps it within 1e-3)."""
    import train
    torch.manual_seed(7)
    source = timm.create_model('test_resnet', num_classes=5)
    torch.save({'arch': 'test_resnet', 'state_dict': source.state_dict()}, tmp_path / 'five.pth.tar')
    out = tmp_path / 'out'
    train.main(['--dataset', 'digits-grid', '--model', 'test_resnet', '--train-num-samples', '32',
                '--val-num-samples', '16', '-b', '16', '--workers', '0', '--epochs', '1', '--aug-splits', '2',
                '--split-bn', '--opt', 'sgd', '--lr', '1e-6', '--weight-decay', '0', '--warmup-epochs', '0',
                '--pretrained-path', str(tmp_path / 'five.pth.tar'), '--output', str(out)])
    assert any('.aux_bn.' in k for k in torch.load(out / 'model_best.pth.tar', weights_only=True)['state_dict'])
    saved = load_file(str(out / 'model.safetensors'))
    assert not any('.aux_bn.' in k for k in saved)
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)  # strict: every key fits
    assert loaded.num_classes == 10 and saved.keys() == loaded.state_dict().keys()
    # the file's stem, moved by at most lr-sized steps (a random initialization is ~0.1 away)
    assert (saved['conv1.0.weight'] - source.conv1[0].weight).abs().max() < 1e-3
