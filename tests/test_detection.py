"""timm backbones for torchvision detection: FPN outputs, stage freezing, weights from a model folder,
a Faster R-CNN that trains a step and predicts on CPU."""
import math

import pytest
import torch
from torch import nn

timm = pytest.importorskip('timm')
torchvision = pytest.importorskip('torchvision')
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from timm_multilabel.detection import stage_of_parameters, timm_backbone  # noqa: E402
from timm_multilabel.errors import UserError  # noqa: E402


def test_fpn_outputs_levels_strides_and_channels():
    torch.manual_seed(0)
    backbone = timm_backbone('test_resnet', out_indices=(1, 2, 3, 4), out_channels=32).eval()
    assert backbone.out_channels == 32
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 96))
    assert list(out) == ['0', '1', '2', '3', 'pool']
    # levels 1..4 of a ResNet have strides 4, 8, 16, 32; the extra max-pooled level halves the last
    expected = {'0': (16, 24), '1': (8, 12), '2': (4, 6), '3': (2, 3), 'pool': (1, 2)}
    for key, (h, w) in expected.items():
        assert tuple(out[key].shape) == (2, 32, h, w), key


def test_no_fpn_returns_last_level():
    backbone = timm_backbone('test_resnet', fpn=False).eval()
    assert backbone.out_channels == backbone.body.feature_info.channels()[-1]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert list(out) == ['0'] and out['0'].shape == (1, backbone.out_channels, 2, 2)


def test_stages_of_parameters_follow_feature_levels():
    resnet = timm.create_model('test_resnet', features_only=True)
    stages = stage_of_parameters(resnet)
    # feature levels of a ResNet: act1 (stem), layer1, layer2, layer3, layer4
    assert stages['conv1.0.weight'] == 0 and stages['bn1.weight'] == 0
    assert stages['layer1.0.conv1.weight'] == 1
    assert stages['layer2.0.conv1.weight'] == 2
    assert stages['layer4.0.conv1.weight'] == 4
    effnet = timm.create_model('test_efficientnet', features_only=True)
    stages = stage_of_parameters(effnet)
    assert stages['conv_stem.weight'] == 0 and stages['blocks.0.0.conv.weight'] == 0
    assert stages['blocks.2.0.conv_exp.weight'] == 2 and stages['blocks.4.0.conv_pw.weight'] == 4


@pytest.mark.parametrize('layers, trainable_prefixes', [
    (None, ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')),
    (5, ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')),
    (3, ('layer2', 'layer3', 'layer4')),
    (0, ()),
])
def test_trainable_layers_count_stages_from_the_last(layers, trainable_prefixes):
    backbone = timm_backbone('test_resnet', trainable_layers=layers)
    for name, p in backbone.body.named_parameters():
        assert p.requires_grad == name.startswith(trainable_prefixes), name
    assert all(p.requires_grad for p in backbone.fpn.parameters())


def test_trainable_layers_out_of_range():
    with pytest.raises(UserError, match='trainable_layers must be in \\[0, 5\\]'):
        timm_backbone('test_resnet', trainable_layers=6)
    with pytest.raises(UserError, match='backbone'):
        timm_backbone('no_such_model_xyz')


def test_weights_from_a_model_folder_load_into_features_only(tmp_path):
    from timm_multilabel.hub import save_model_folder
    torch.manual_seed(1)
    model = timm.create_model('test_resnet', num_classes=7)
    save_model_folder(model, tmp_path, model_name='test_resnet', num_classes=7)
    backbone = timm_backbone(f'local-dir:{tmp_path}')  # pretrained by default for a folder
    assert torch.equal(backbone.body.layer3[0].conv1.weight, model.layer3[0].conv1.weight)
    assert torch.equal(backbone.body.conv1[0].weight, model.conv1[0].weight)
    # trained weights: every batch norm is frozen, as torchvision does for trained backbones
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    frozen = backbone.body.layer3[0].bn1
    assert isinstance(frozen, FrozenBatchNorm2d)
    assert torch.equal(frozen.running_mean, model.layer3[0].bn1.running_mean)


def _batch():
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        {'boxes': torch.tensor([[5.0, 5.0, 40.0, 40.0]]), 'labels': torch.tensor([1])},
        {'boxes': torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), 'labels': torch.tensor([2, 1])},
    ]
    return images, targets


def test_faster_rcnn_trains_a_step_and_predicts_on_cpu():
    torch.manual_seed(0)
    backbone = timm_backbone('test_resnet', trainable_layers=2, out_channels=64)
    detector = torchvision.models.detection.FasterRCNN(
        backbone, num_classes=3, min_size=64, max_size=96,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64)
    frozen_bn = backbone.body.layer1[0].bn1
    assert isinstance(frozen_bn, FrozenBatchNorm2d)  # a frozen stage keeps its statistics
    stats_before = frozen_bn.running_mean.clone()
    trainable_bn = backbone.body.layer4[0].bn1
    assert type(trainable_bn) is nn.BatchNorm2d  # random init: trained stages keep normal batch norm
    before = {n: p.detach().clone() for n, p in backbone.body.named_parameters()}

    detector.train()
    images, targets = _batch()
    losses = detector(images, targets)
    assert set(losses) == {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'}
    loss = sum(losses.values())
    assert math.isfinite(loss.item())
    opt = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.01)
    loss.backward()
    for name, p in backbone.body.named_parameters():
        trainable = name.startswith(('layer3', 'layer4'))
        assert p.requires_grad == trainable, name
        if trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    assert any(p.grad.abs().sum() > 0 for n, p in backbone.body.named_parameters() if n.startswith('layer3'))
    assert all(p.grad is not None for p in backbone.fpn.parameters())
    opt.step()
    for name, p in backbone.body.named_parameters():
        if not name.startswith(('layer3', 'layer4')):
            assert torch.equal(p, before[name]), name  # frozen: unchanged by the step
        elif p.grad.abs().sum() > 0:
            assert not torch.equal(p, before[name]), name
    assert torch.equal(frozen_bn.running_mean, stats_before)

    detector.eval()
    with torch.no_grad():
        preds = detector(images)
    assert len(preds) == 2
    for pred, img in zip(preds, images):
        n = pred['boxes'].shape[0]
        assert pred['boxes'].shape == (n, 4) and pred['scores'].shape == (n,) and pred['labels'].shape == (n,)
        if n:
            h, w = img.shape[1:]
            assert (pred['boxes'][:, 2] <= w).all() and (pred['boxes'][:, 3] <= h).all()
            assert ((pred['labels'] >= 1) & (pred['labels'] < 3)).all()
