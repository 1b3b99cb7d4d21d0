"""Box-aware crop / flip transforms and the BoxedDataset wrapper."""
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms

from timm_multilabel.errors import UserError
from timm_multilabel.relabel.boxed_dataset import BoxedDataset, image_ids_for
from timm_multilabel.relabel.transforms import (
    SPATIAL_AUGMENT_OPS, RandomHorizontalFlipWithFlag, RandomResizedCropWithBox, create_box_transform,
)

W, H = 240, 160


def _coord_image(w=W, h=H):
    """RGB image whose red channel is the column index and green the row index."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.arange(w)[None, :]
    a[..., 1] = np.arange(h)[:, None]
    a[..., 2] = 77
    return Image.fromarray(a)


def _seed(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def test_crop_box_matches_the_pixels_it_cut():
    img = _coord_image()
    crop = RandomResizedCropWithBox(48, scale=(0.05, 0.6), interpolation='nearest')
    _seed(0)
    for _ in range(20):
        out, box = crop.crop_with_box(img)
        a = np.asarray(out).astype(int)
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        # nearest resize of a crop of cw columns into 48: first/last sampled columns within cw/48 + 1 of the edges
        cw, ch = (x2 - x1) * W, (y2 - y1) * H
        assert a[..., 0].min() == pytest.approx(x1 * W, abs=cw / 48 + 1)
        assert a[..., 0].max() + 1 == pytest.approx(x2 * W, abs=cw / 48 + 1)
        assert a[..., 1].min() == pytest.approx(y1 * H, abs=ch / 48 + 1)
        assert a[..., 1].max() + 1 == pytest.approx(y2 * H, abs=ch / 48 + 1)
        # x is horizontal: red (column) grows left to right, green (row) top to bottom
        assert a[0, -1, 0] > a[0, 0, 0] and a[-1, 0, 1] > a[0, 0, 1]
    out = crop(img)  # drop-in call: image only, box kept on the transform
    assert out.size == (48, 48) and crop.last_box.shape == (4,)


@pytest.mark.parametrize('interpolation', ['bilinear', 'random'])
def test_same_sampling_as_timm_rrc(interpolation):
    img = _coord_image()
    ours = RandomResizedCropWithBox(32, interpolation=interpolation)
    theirs = RandomResizedCropAndInterpolation(32, interpolation=interpolation)
    for s in range(5):
        _seed(s)
        a, box = ours.crop_with_box(img)
        _seed(s)
        b = theirs(img)
        assert np.array_equal(np.asarray(a), np.asarray(b))
        _seed(s)
        i, j, h, w = RandomResizedCropAndInterpolation.get_params(img, theirs.scale, theirs.ratio)
        torch.testing.assert_close(box, torch.tensor([j / W, i / H, (j + w) / W, (i + h) / H]))


def test_flip_reports_itself_with_torchvision_draws():
    img = _coord_image(8, 4)
    ours, theirs = RandomHorizontalFlipWithFlag(0.5), transforms.RandomHorizontalFlip(0.5)
    flags = []
    for s in range(12):
        torch.manual_seed(s)
        a, flipped = ours.flip_with_flag(img)
        torch.manual_seed(s)
        assert np.array_equal(np.asarray(a), np.asarray(theirs(img)))
        assert flipped == (np.asarray(a)[0, 0, 0] == 7)  # red of the left column is 7 when mirrored
        flags.append(flipped)
    assert any(flags) and not all(flags)


def test_box_transform_equals_timm_pipeline_without_auto_augment():
    kw = dict(input_size=(3, 32, 32), color_jitter=0.4, re_prob=0.3, interpolation='random')
    ours = create_box_transform(**kw)
    theirs = create_transform(is_training=True, **kw)
    img = _coord_image()
    seen_flip = set()
    for s in range(6):
        _seed(s)
        x, box, flipped = ours(img)
        _seed(s)
        torch.testing.assert_close(x, theirs(img), rtol=0, atol=0)
        assert x.shape == (3, 32, 32) and box.shape == (4,) and isinstance(flipped, bool)
        seen_flip.add(flipped)
    assert seen_flip == {True, False}
    assert create_box_transform(input_size=32, hflip=0.0).flip is None


@pytest.mark.parametrize('aa,kind', [('rand-m9-mstd0.5', RandAugment), ('rand-m9-tweights', RandAugment),
                                     ('v0', AutoAugment), ('augmix-m5-w2', AugMixAugment)])
def test_spatial_auto_augment_ops_removed_with_warning(aa, kind):
    with pytest.warns(UserWarning, match='Rotate'):
        t = create_box_transform(input_size=32, auto_augment=aa)
    aug = next(a for a in t.secondary.transforms if isinstance(a, kind))
    ops = [op for sub in aug.policy for op in sub] if kind is AutoAugment else aug.ops
    assert ops and not {op.name for op in ops} & SPATIAL_AUGMENT_OPS
    if getattr(aug, 'choice_weights', None) is not None:
        assert len(aug.choice_weights) == len(aug.ops) and np.isclose(aug.choice_weights.sum(), 1.0)
    x, box, _ = t(_coord_image())
    assert x.shape == (3, 32, 32) and box.shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        kept = create_box_transform(input_size=32, auto_augment=aa, keep_spatial_aug=True)
    aug = next(a for a in kept.secondary.transforms if isinstance(a, kind))
    ops = [op for sub in aug.policy for op in sub] if kind is AutoAugment else aug.ops
    assert {op.name for op in ops} & SPATIAL_AUGMENT_OPS


@pytest.mark.parametrize('kw,match', [(dict(vflip=0.5), 'vflip'), (dict(train_crop_mode='rkrc'), 'train_crop_mode'),
                                      (dict(no_aug=True), 'no_aug'), (dict(is_training=False), 'is_training')])
def test_refused_options(kw, match):
    with pytest.raises(UserError, match=match):
        create_box_transform(input_size=32, **kw)


class _PilDataset:
    def __init__(self, n):
        self.images = [_coord_image(40 + i, 30) for i in range(n)]
        self.transform = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3


def test_boxed_dataset_items_and_errors():
    ds = BoxedDataset(_PilDataset(3), create_box_transform(input_size=16), ['a/0', 'a/1', 'b/2'])
    img, meta = ds[2]
    assert img.shape == (3, 16, 16)
    assert meta['label'] == 2 and meta['image_id'] == 'b/2'
    assert meta['box'].shape == (4,) and isinstance(meta['flipped'], bool)
    with pytest.raises(UserError, match='2 image ids for 3 samples'):
        BoxedDataset(_PilDataset(3), create_box_transform(input_size=16), ['a', 'b'])
    bad = _PilDataset(1)
    bad.transform = transforms.ToTensor()
    with pytest.raises(UserError, match='transform'):
        BoxedDataset(bad, create_box_transform(input_size=16), ['a'])
    with pytest.raises(UserError, match='image_ids'):
        BoxedDataset(_PilDataset(1), create_box_transform(input_size=16))


def test_image_ids_of_folders(tmp_path):
    for rel in ('n01/x_1.JPEG', 'n01/x_2.png', 'n02/y.jpg'):
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        _coord_image(8, 8).save(p)
    from timm.data import create_dataset
    from torchvision.datasets import ImageFolder
    expect = ['n01/x_1', 'n01/x_2', 'n02/y']
    assert sorted(image_ids_for(ImageFolder(str(tmp_path)))) == expect
    timm_ds = create_dataset('', root=str(tmp_path))
    assert sorted(image_ids_for(timm_ds)) == expect
    ds = BoxedDataset(timm_ds, create_box_transform(input_size=8))
    assert sorted(ds.image_ids) == expect and ds[0][0].shape == (3, 8, 8)
