"""LabelPoolingCollate end to end with a dict-backed fake store; check_maps_cover."""
import math
import pickle

import numpy as np
import pytest
import torch
from timm.data import Mixup
from torch.utils.data import DataLoader

from timm_multilabel.errors import UserError
from timm_multilabel.registry import create_target_transform
from timm_multilabel.relabel.collate import LabelPoolingCollate, check_maps_cover
from timm_multilabel.relabel.pooling import label_pool

C = 10
FULL = [0.0, 0.0, 1.0, 1.0]
LEFT = [0.0, 0.0, 0.5, 1.0]
RIGHT = [0.5, 0.0, 1.0, 1.0]


class FakeStore:
    """The LabelMapStore contract, dict-backed: id -> (scores [K,H,W] float32, classes [K,H,W] int64)."""

    def __init__(self, maps, num_classes=C):
        self.maps = maps
        self.num_classes = num_classes

    def __getitem__(self, image_id):
        return self.maps[image_id]

    def get_batch(self, image_ids):
        s, c = zip(*(self.maps[i] for i in image_ids))
        return torch.stack(s), torch.stack(c)

    def missing(self, image_ids):
        return [i for i in image_ids if i not in self.maps]


def _half_map(left, right, score=5.0, size=4):
    classes = torch.full((1, size, size), right, dtype=torch.long)
    classes[:, :, : size // 2] = left
    return torch.full((1, size, size), score), classes


def _store(n=6):
    # image i: left half class i, right half class (i + 5) % 10
    return FakeStore({f'img/{i}': _half_map(i, (i + 5) % C) for i in range(n)})


def _p(score=5.0, num_classes=C):
    return math.exp(score) / (math.exp(score) + num_classes - 1)


def _item(i, box, flipped=False, value=None):
    img = torch.full((3, 8, 8), float(i if value is None else value))
    return img, {'label': i, 'image_id': f'img/{i}', 'box': torch.tensor(box), 'flipped': flipped}


def test_pools_each_sample_over_its_box():
    collate = LabelPoolingCollate(_store(), C)
    images, targets = collate([_item(0, LEFT), _item(1, RIGHT), _item(2, FULL)])
    assert images.shape == (3, 3, 8, 8) and targets.shape == (3, C)
    torch.testing.assert_close(targets.sum(1), torch.ones(3))
    assert targets.argmax(1).tolist()[:2] == [0, 6]
    assert targets[0, 0].item() == pytest.approx(_p(), abs=1e-6)  # left box: class 0 logit 5, others 0
    # full box: both halves with logit 2.5
    assert targets[2, 2].item() == pytest.approx(targets[2, 7].item()) == pytest.approx(
        math.exp(2.5) / (2 * math.exp(2.5) + 8), abs=1e-6)
    boxes = torch.tensor([LEFT, RIGHT, FULL])
    s, c = _store().get_batch(['img/0', 'img/1', 'img/2'])
    torch.testing.assert_close(targets, label_pool(s, c, boxes, C))
    # a 1x1 target ignores the flip
    _, flipped = collate([_item(0, LEFT, flipped=True)])
    torch.testing.assert_close(flipped, targets[:1])


def test_flip_mirrors_multi_cell_targets():
    collate = LabelPoolingCollate(_store(), C, output_size=(1, 2))
    _, t = collate([_item(3, FULL), _item(3, FULL, flipped=True)])
    assert t.shape == (2, C, 1, 2)
    assert t[0].argmax(0).flatten().tolist() == [3, 8]  # left bin = left half of the image
    assert t[1].argmax(0).flatten().tolist() == [8, 3]  # the flipped crop shows it on the right
    torch.testing.assert_close(t[1], t[0].flip(-1))


def test_global_and_hard_variants():
    store = _store()
    glob = LabelPoolingCollate(store, C, global_pool=True)
    _, t = glob([_item(4, LEFT), _item(4, RIGHT)])
    torch.testing.assert_close(t[0], t[1])  # the crop does not matter
    e = math.exp(2.5)
    assert t[0, 4].item() == pytest.approx(e / (2 * e + 8), abs=1e-6)
    hard = LabelPoolingCollate(store, C, hard=True)
    _, t = hard([_item(4, LEFT), _item(4, RIGHT)])
    torch.testing.assert_close(t, torch.eye(C)[[4, 9]])
    with pytest.raises(UserError, match='global_pool'):
        LabelPoolingCollate(store, C, global_pool=True, output_size=2)


def test_smoothing_and_labels():
    collate = LabelPoolingCollate(_store(), C, smoothing=0.1, hard=True, return_labels=True)
    _, t, labels = collate([_item(0, LEFT), _item(1, LEFT)])
    assert labels.tolist() == [0, 1] and labels.dtype == torch.long
    assert t[0, 0].item() == pytest.approx(0.9 + 0.01) and t[0, 1].item() == pytest.approx(0.01)


def test_mixup_after_pooling_same_lambda():
    mix = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=C, multi_label=True)
    collate = LabelPoolingCollate(_store(), C, mixup=mix)
    batch = [_item(0, LEFT), _item(1, RIGHT), _item(2, LEFT), _item(3, RIGHT)]
    pooled = LabelPoolingCollate(_store(), C)(batch)[1]
    np.random.seed(0)
    images, targets = collate(batch)
    # image i is the constant i, mixed with image 3 - i: value = lam * i + (1 - lam) * (3 - i)
    lam = (images[0, 0, 0, 0].item() - 3.0) / (0.0 - 3.0)
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(targets, lam * pooled + (1 - lam) * pooled.flip(0), atol=1e-5, rtol=0)


def test_cutmix_area_weighted_targets():
    mix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=C, multi_label=True)
    collate = LabelPoolingCollate(_store(), C, mixup=mix)
    batch = [_item(0, LEFT, value=10), _item(1, RIGHT, value=20)]
    pooled = LabelPoolingCollate(_store(), C)(batch)[1]
    for seed in range(5):
        np.random.seed(seed)
        images, targets = collate([(img.clone(), m) for img, m in batch])
        pasted = (images[0, 0] == 20).float().mean().item()  # area of sample 1 pasted into sample 0
        torch.testing.assert_close(targets[0], (1 - pasted) * pooled[0] + pasted * pooled[1], atol=1e-5, rtol=0)


def test_mixup_validation():
    with pytest.raises(UserError, match='multi_label=True'):
        LabelPoolingCollate(_store(), C, mixup=Mixup(cutmix_alpha=1.0, label_smoothing=0.0, num_classes=C))
    with pytest.raises(UserError, match='multi_label=True'):
        LabelPoolingCollate(_store(), C, mixup=Mixup(multi_label=True, label_smoothing=0.1, num_classes=C))
    with pytest.raises(UserError, match='multi-cell'):
        LabelPoolingCollate(_store(), C, output_size=2,
                            mixup=Mixup(multi_label=True, label_smoothing=0.0, num_classes=C))
    # odd batch: left unmixed with one warning
    collate = LabelPoolingCollate(_store(), C, mixup=Mixup(multi_label=True, label_smoothing=0.0, num_classes=C))
    with pytest.warns(UserWarning, match='odd'):
        images, _ = collate([_item(0, LEFT), _item(1, LEFT), _item(2, LEFT)])
    assert images[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]


class _BoxByLabel(torch.utils.data.Dataset):
    """Even items crop the left half of the image, odd ones the right half."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return _item(i, LEFT if i % 2 == 0 else RIGHT, flipped=bool(i % 3 == 0))


def test_dataloader_workers_and_pickle():
    collate = LabelPoolingCollate(_store(), C)
    assert isinstance(pickle.loads(pickle.dumps(collate)), LabelPoolingCollate)
    loader = DataLoader(_BoxByLabel(), batch_size=3, num_workers=2, collate_fn=collate)
    got = torch.cat([t for _, t in loader])
    assert got.argmax(1).tolist() == [0, 6, 2, 8, 4, 0]  # left -> i, right -> (i + 5) % 10


def test_registered_as_label_pooling():
    assert isinstance(create_target_transform('label_pooling', store=_store(), num_classes=C), LabelPoolingCollate)


def test_store_errors_surface_in_one_line():
    with pytest.raises(UserError, match='class ids'):
        LabelPoolingCollate(_store(), 5)([_item(3, FULL)])  # map holds class 8 >= 5
    with pytest.raises(UserError, match='BoxedDataset'):
        LabelPoolingCollate(_store(), C)([(torch.zeros(3, 8, 8), 1)])


def test_check_maps_cover():
    store = _store(4)
    check_maps_cover(store, ['img/0', 'img/3'], C)
    with pytest.raises(UserError, match=r"miss 2 of 3 training images \(e\.g\. 'img/7'\)"):
        check_maps_cover(store, ['img/0', 'img/7', 'img/9'], C)
    with pytest.raises(UserError, match='label maps have 10 classes .* model has 8'):
        check_maps_cover(store, ['img/0'], 8)
    undeclared = _store(4)
    undeclared.num_classes = None
    with pytest.raises(UserError, match="'img/3' has class ids in \\[3, 8\\]"):
        check_maps_cover(undeclared, ['img/0', 'img/1', 'img/2', 'img/3'], 8, chunk_size=3)
    check_maps_cover(undeclared, ['img/0', 'img/1', 'img/2'], 8)  # ids 0..7 only
    with pytest.raises(UserError) as e:
        check_maps_cover(store, ['x'] * 3, C)
    assert '\n' not in str(e.value)
