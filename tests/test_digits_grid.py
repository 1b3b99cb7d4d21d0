"""digits-grid: determinism, label statistics, ground truth from pixels, disjoint splits, export."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from timm_multilabel.data import DigitsGrid
from timm_multilabel.errors import UserError


@pytest.fixture(scope='module')
def sk_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images, d.target


def _blocks(arr: np.ndarray, grid: int, cell: int):
    """Yield (row, col, gray block [cell, cell]) of an image [S, S, 3], row 0 = top."""
    for r in range(grid):
        for c in range(grid):
            yield r, c, arr[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell, 0]


def _reference_cells(images: np.ndarray, cell: int) -> dict:
    """Independent render: 0..16 -> 0..255, then np.kron nearest upscale; pixel bytes -> source index."""
    factor = cell // 8
    out = {}
    for i, img in enumerate(images):
        block = np.kron(np.round(img * 255.0 / 16.0), np.ones((factor, factor))).astype(np.uint8)
        out[block.tobytes()] = i
    return out


def test_image_size_mode_and_item():
    ds = DigitsGrid('train', num_samples=4, seed=0)
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == 'RGB' and img.size == (48, 48)
    assert isinstance(label, int) and label == ds.labels[0]
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    assert arr.max() == 255 and arr.min() == 0  # ink 16 -> 255, background 0
    ds = DigitsGrid('test', num_samples=2, cell_size=10, grid=5, target_transform=lambda y: y + 100)
    img, label = ds[1]
    assert img.size == (50, 50) and label == ds.labels[1] + 100
    assert ds.cell_digits(1).shape == (5, 5)


def test_defaults_and_ids():
    train, test = DigitsGrid('train'), DigitsGrid('test')
    assert len(train) == 10000 and len(test) == 2000
    assert train.num_classes == 10 and train.class_names == [str(d) for d in range(10)]
    assert train.image_id(0) == 'train/000000' and test.image_id(1999) == 'test/001999'
    assert len(set(train.image_ids)) == 10000
    assert train.filename(7) == 'train/000007.png'


def test_determinism():
    a, b = DigitsGrid('train', num_samples=300, seed=5), DigitsGrid('train', num_samples=300, seed=5)
    c = DigitsGrid('train', num_samples=300, seed=6)
    assert a.image_ids == b.image_ids
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in (0, 17, 299):
        np.testing.assert_array_equal(np.asarray(a[i][0]), np.asarray(b[i][0]))
        assert a.label_position(i) == b.label_position(i)
    assert a.real_labels == b.real_labels
    assert not np.array_equal(a.labels, c.labels)
    assert not all(np.array_equal(a.image_array(i), c.image_array(i)) for i in range(10))


def test_cells_match_pixels_and_ground_truth(sk_digits):
    images, targets = sk_digits
    ref = _reference_cells(images, 16)
    ds = DigitsGrid('train', num_samples=50, seed=1)
    for i in range(len(ds)):
        arr = ds.image_array(i)
        digits = ds.cell_digits(i)
        for r, c, block in _blocks(arr, 3, 16):
            src = ref[block.tobytes()]  # KeyError: the cell is not a rendered source digit
            assert targets[src] == digits[r, c], (i, r, c)
        present = sorted(set(int(d) for d in digits.ravel()))
        assert ds.real_labels[i] == present
        assert np.flatnonzero(ds.multi_hot[i]).tolist() == present
        r, c = ds.label_position(i)
        assert ds.labels[i] == digits[r, c]
        assert ds.labels[i] in ds.real_labels[i]


def test_orientation_top_row_left_column(sk_digits):
    images, targets = sk_digits
    ds = DigitsGrid('test', num_samples=20, seed=2)
    arr = ds.image_array(3)
    src = ds.source_indices[3]
    # top-right cell (row 0, col 2) is the first 16 rows, last 16 columns
    expect = np.kron(np.round(images[src[0, 2]] * 255.0 / 16.0), np.ones((2, 2))).astype(np.uint8)
    np.testing.assert_array_equal(arr[:16, 32:, 0], expect)
    assert ds.cell_digits(3)[0, 2] == targets[src[0, 2]]
    assert ds.cell_box(0, 2) == pytest.approx((2 / 3, 0.0, 1.0, 1 / 3))


def test_label_statistics():
    n = 5000
    ds = DigitsGrid('train', num_samples=n, seed=0)
    pos = np.array([ds.label_position(i) for i in range(n)])
    at = np.zeros((3, 3))
    np.add.at(at, (pos[:, 0], pos[:, 1]), 1)
    at /= n
    assert at[1, 1] == pytest.approx(0.6, abs=0.03)
    others = np.delete(at.ravel(), 4)
    assert np.all(np.abs(others - 0.05) < 0.015), at
    # label == center digit: the center cell chosen (0.6) or another cell holding the same digit (~0.4 * 0.1)
    center = np.array([ds.cell_digits(i)[1, 1] for i in range(n)])
    frac = float((ds.labels == center).mean())
    assert 0.6 < frac < 0.68
    assert all(int(ds.labels[i]) in ds.real_labels[i] for i in range(n))
    # every class appears roughly uniformly
    assert np.bincount(ds.labels, minlength=10).min() > 0.07 * n


def test_train_test_source_digits_disjoint():
    train = DigitsGrid('train', num_samples=2000, seed=0)
    test = DigitsGrid('test', num_samples=2000, seed=0)

    def cell_hashes(ds):
        return {block.tobytes() for i in range(len(ds)) for _, _, block in _blocks(ds.image_array(i), 3, 16)}

    h_train, h_test = cell_hashes(train), cell_hashes(test)
    assert not (h_train & h_test)
    assert len(h_train) > 1200 and len(h_test) > 400  # the pools (1347 / 450 digits) are well used
    # the pools do not depend on the grid seed
    other = DigitsGrid('test', num_samples=2000, seed=9)
    assert not (cell_hashes(other) & h_train)


def test_label_probs_override():
    probs = np.zeros((3, 3))
    probs[0, 2] = 1.0
    ds = DigitsGrid('train', num_samples=100, label_probs=probs)
    assert all(ds.label_position(i) == (0, 2) for i in range(100))
    assert all(ds.labels[i] == ds.cell_digits(i)[0, 2] for i in range(100))
    ds = DigitsGrid('train', num_samples=100, center_prob=1.0)
    assert all(ds.labels[i] == ds.cell_digits(i)[1, 1] for i in range(100))


@pytest.mark.parametrize('kwargs, match', [
    (dict(split='val'), 'split'),
    (dict(num_samples=0), 'num_samples'),
    (dict(grid=4), 'grid=4'),
    (dict(center_prob=1.5), 'center_prob'),
    (dict(label_probs=[[1.0, 0.0], [0.0, 0.0]]), 'label_probs'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        DigitsGrid(**kwargs)


def test_export_image_folder_round_trip(tmp_path):
    ds = DigitsGrid('test', num_samples=5, seed=3)
    paths = ds.export_image_folder(str(tmp_path))
    assert len(paths) == 5
    found = sorted(
        os.path.splitext(os.path.relpath(os.path.join(d, f), tmp_path))[0].replace(os.sep, '/')
        for d, _, files in os.walk(tmp_path) for f in files)
    assert found == ds.image_ids  # only the PNGs, no temp files left behind
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            assert im.format == 'PNG'
            np.testing.assert_array_equal(np.asarray(im.convert('RGB')), np.asarray(ds[i][0]))
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(UserError, match='afile'):
        ds.export_image_folder(str(tmp_path / 'afile'))


def test_timm_transforms_and_loader():
    from timm.data import create_transform
    train_tf = create_transform(32, is_training=True, hflip=0.5, scale=(0.2, 1.0))
    eval_tf = create_transform(32, is_training=False, crop_pct=1.0)
    ds = DigitsGrid('train', num_samples=8, transform=train_tf)
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32)
    ds = DigitsGrid('test', num_samples=8, transform=eval_tf)
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.tolist() == ds.labels[:4].tolist()
