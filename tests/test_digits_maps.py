"""Oracle and machine label maps of the digit sets, and the digits-main dataset."""
import math

import numpy as np
import pytest
import torch

from timm_multilabel.data.digits_grid import DigitsGrid, source_split_indices
from timm_multilabel.data.digits_main import DigitsMain
from timm_multilabel.data.digits_maps import cell_accuracy, oracle_maps
from timm_multilabel.errors import UserError
from timm_multilabel.relabel.pooling import label_pool
from timm_multilabel.relabel.digit_maps import write_machine_maps, write_oracle_maps
from timm_multilabel.relabel.store import load_label_maps
from timm_multilabel.training.digit_annotator import center_head, train_digit_classifier


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _asymmetric_index(ds):
    """A sample whose grid differs left/right and top/bottom (and from its transpose)."""
    for i in range(len(ds)):
        d = ds.cell_digits(i)
        if (d[:, 0] != d[:, -1]).any() and (d[0] != d[-1]).any() and (d != d.T).any():
            return i
    raise AssertionError('no asymmetric grid')


@pytest.fixture(scope='module')
def grid_maps(tmp_path_factory):
    ds = DigitsGrid('train', num_samples=24, seed=5)
    folder = write_oracle_maps(ds, tmp_path_factory.mktemp('maps') / 'oracle', logit=12.0, shard_size=10)
    return ds, folder


def test_oracle_maps_round_trip_through_the_store(grid_maps):
    ds, folder = grid_maps
    store = load_label_maps(str(folder))
    assert len(store) == 24 and store.num_classes == 10 and store.map_size == (3, 3) and store.topk == 5
    assert sorted(store.image_ids) == sorted(ds.image_ids)
    assert len(list((folder / 'data').glob('train-*.parquet'))) == 3  # 24 maps in shards of 10
    scores, classes = store.get_batch(ds.image_ids)
    for i in range(len(ds)):
        assert torch.equal(classes[i, 0], torch.from_numpy(ds.cell_digits(i)))  # [r, c], row 0 = top
    assert torch.all(scores[:, 0] == 12.0) and torch.all(scores[:, 1:] == 0.0)
    # the other K-1 entries are distinct classes other than the cell's digit
    for k in range(1, 5):
        assert torch.all(classes[:, k] != classes[:, 0])
    assert torch.all(classes[:, 1:-1] < classes[:, 2:])


def test_oracle_folder_is_a_hugging_face_dataset(grid_maps):
    import datasets
    ds, folder = grid_maps
    loaded = datasets.load_dataset(str(folder), split='train')
    assert loaded.num_rows == 24
    assert set(loaded.column_names) >= {'image_id', 'scores', 'classes'}
    assert sorted(loaded['image_id']) == sorted(ds.image_ids)


def test_oracle_orientation_pooled_over_one_cell(grid_maps):
    ds, folder = grid_maps
    store = load_label_maps(str(folder))
    i = _asymmetric_index(ds)
    digits = ds.cell_digits(i)
    scores, classes = store[ds.image_id(i)]
    for r in range(3):
        for c in range(3):
            box = torch.tensor([ds.cell_box(r, c)])
            target = label_pool(scores[None], classes[None], box, 10)[0]
            # one cell: the digit's logit 12 against 0 for the 9 others
            expected = math.exp(12.0) / (math.exp(12.0) + 9)
            assert int(target.argmax()) == digits[r, c]
            assert float(target[digits[r, c]]) == pytest.approx(expected, rel=1e-5)
    # a box over the left column vs the right column: different digits win where they differ
    left = label_pool(scores[None], classes[None], torch.tensor([[0.0, 0.0, 1 / 3, 1.0]]), 10)[0]
    counts = np.bincount(digits[:, 0], minlength=10)
    assert int(left.argmax()) in np.flatnonzero(counts == counts.max())


def test_oracle_map_size_multiple_and_refusals():
    ds = DigitsGrid('test', num_samples=3, seed=1)
    scores, classes = oracle_maps(ds, map_size=6, topk=3, logit=5.0, fill=-1.0)
    assert scores.shape == classes.shape == (3, 3, 6, 6)
    d = ds.cell_digits(2)
    assert classes[2, 0, 0, 5] == d[0, 2] and classes[2, 0, 5, 0] == d[2, 0] and classes[2, 0, 3, 2] == d[1, 1]
    assert torch.all(scores[:, 1:] == -1.0) and torch.all(scores[:, 0] == 5.0)
    with pytest.raises(UserError, match='multiple of the grid'):
        oracle_maps(ds, map_size=4)
    with pytest.raises(UserError, match='above fill'):
        oracle_maps(ds, logit=0.0, fill=0.0)
    with pytest.raises(UserError, match='topk'):
        oracle_maps(ds, topk=11)


def test_oracle_folder_is_not_overwritten_silently(tmp_path):
    ds = DigitsGrid('test', num_samples=4, seed=1)
    write_oracle_maps(ds, tmp_path / 'm')
    with pytest.raises(UserError, match='already holds label maps'):
        write_oracle_maps(ds, tmp_path / 'm')
    write_oracle_maps(ds, tmp_path / 'm', overwrite=True, topk=2)
    assert load_label_maps(str(tmp_path / 'm')).topk == 2


def test_digits_main_empty_cells_are_neutral_and_main_dominates(tmp_path):
    ds = DigitsMain('train', num_samples=40, seed=3)
    scores, classes = oracle_maps(ds, logit=16.0)
    n = len(ds)
    empty = [(i, r, c) for i in range(n) for r in range(4) for c in range(4) if ds.cell_digits(i)[r, c] < 0]
    i, r, c = empty[0]
    t = label_pool(scores[i:i + 1], classes[i:i + 1], torch.tensor([ds.cell_box(r, c)]), 10)[0]
    assert torch.allclose(t, torch.full((10,), 0.1))  # all classes at fill: uniform, adds nothing
    # whole image: the main digit has 4 cells of logit 16, each distractor class one: 4 vs 1 in pooled logits
    whole = label_pool(scores, classes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4), 10)
    for i in range(n):
        d = ds.cell_digits(i)
        others = np.unique(d[(d >= 0) & (d != ds.labels[i])])
        z = 9 - len(others) + len(others) * math.exp(1.0) + math.exp(4.0)
        assert float(whole[i, ds.labels[i]]) == pytest.approx(math.exp(4.0) / z, rel=1e-5)
    # pooled over the main object's box: only the main digit's cells
    main = label_pool(scores, classes, torch.tensor([ds.main_box(i) for i in range(n)]), 10)
    assert torch.all(main.argmax(1) == torch.tensor(ds.labels))


# ---------------------------------------------------------------------------------- DigitsMain

def test_digits_main_label_is_the_main_object():
    ds = DigitsMain('train', num_samples=50, seed=0)
    assert len(ds) == 50 and ds.image_size == 48
    for i in range(50):
        d = ds.cell_digits(i)
        r, c = ds.main_position(i)
        assert np.all(d[r:r + 2, c:c + 2] == ds.labels[i])
        assert ds.labels[i] in ds.real_labels[i]
        assert sorted(set(d[d >= 0].tolist())) == ds.real_labels[i]
        x1, y1, x2, y2 = ds.main_box(i)
        assert (x1, y1, x2, y2) == (c / 4, r / 4, (c + 2) / 4, (r + 2) / 4)
    img = ds.image_array(0)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    # empty cells are black, digit cells have ink
    d = ds.cell_digits(0)
    for r in range(4):
        for c in range(4):
            ink = img[r * 12:(r + 1) * 12, c * 12:(c + 1) * 12].sum()
            assert (ink == 0) == (d[r, c] < 0)


def test_digits_main_distractors_are_distinct_other_objects():
    ds = DigitsMain('train', num_samples=300, seed=1)
    counts = []
    for i in range(300):
        d = ds.cell_digits(i)
        outside = d[~ds._in_main[i]]
        outside = outside[outside >= 0]
        assert len(set(outside.tolist())) == len(outside) and ds.labels[i] not in outside
        counts.append(len(outside))
    assert 5.0 < np.mean(counts) < 7.0  # 12 free cells at 0.5
    loose = DigitsMain('train', num_samples=300, seed=1, distinct=False)
    assert any(len(set(loose.real_labels[i])) < (loose.cell_digits(i) >= 0).sum() - 3 for i in range(300))


def test_digits_main_is_deterministic_and_uses_disjoint_pools():
    a = DigitsMain('train', num_samples=20, seed=4)
    b = DigitsMain('train', num_samples=20, seed=4)
    assert np.array_equal(a.image_array(7), b.image_array(7)) and a.image_ids == b.image_ids
    test = DigitsMain('test', num_samples=200, seed=4)
    train_pool = set(source_split_indices('train').tolist())
    used = set(test.main_cluster_source.ravel().tolist()) | set(test.cell_source[test._has_distractor].tolist())
    assert not used & train_pool
    with pytest.raises(UserError, match='main_cells'):
        DigitsMain('train', num_samples=2, main_cells=5)


def test_digits_main_big_and_aligned_variants():
    ds = DigitsMain('test', num_samples=30, seed=2, main_style='big', aligned=True)
    assert {ds.main_position(i) for i in range(30)} <= {(0, 0), (0, 2), (2, 0), (2, 2)}
    img = ds.image_array(0)
    r, c = ds.main_position(0)
    assert img[r * 12:(r + 2) * 12, c * 12:(c + 2) * 12].sum() > 0


def test_digits_main_through_the_dataset_factory():
    from timm_multilabel.data import create_dataset, get_image_ids, get_real_labels
    ds = create_dataset('digits-main', split='validation', seed=9, num_samples=5)
    assert isinstance(ds, DigitsMain) and ds.split == 'test'
    assert get_image_ids(ds) == [f'test/{i:06d}' for i in range(5)]
    assert get_real_labels(ds) == ds.real_labels


# ------------------------------------------------------------------------------ machine maps

def test_centered_head_keeps_predictions_and_zero_means_logits():
    import timm
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x).softmax(-1)
        center_head(model, scale=2.0)
        logits = model(x)
    assert torch.allclose(logits.mean(-1), torch.zeros(3), atol=1e-5)
    assert torch.equal(logits.argmax(-1), before.argmax(-1))
    assert torch.allclose((logits / 2.0).softmax(-1), before, atol=1e-5)


@pytest.fixture(scope='module')
def annotator(tmp_path_factory):
    return train_digit_classifier(tmp_path_factory.mktemp('annotator') / 'model', epochs=12, seed=0)


@pytest.mark.slow
def test_machine_annotator_puts_the_right_digit_in_the_right_cell(annotator, tmp_path):
    assert (annotator / 'model.safetensors').is_file() and (annotator / 'config.json').is_file()
    ds = DigitsMain('test', num_samples=40, seed=11)  # canvases of held-out digits
    folder = write_machine_maps(ds, annotator, tmp_path / 'maps', topk=3)
    store = load_label_maps(str(folder))
    assert store.map_size == (4, 4) and store.topk == 3 and store.info['input_size'] == 128
    scores, classes = store.get_batch(ds.image_ids)
    acc = cell_accuracy(ds, scores, classes)
    assert acc['digit_cells'] >= 85.0, acc
    # the main object's box pools to the main digit
    main = label_pool(scores, classes, torch.tensor([ds.main_box(i) for i in range(len(ds))]), 10)
    assert (main.argmax(1) == torch.tensor(ds.labels)).float().mean() >= 0.9
    # empty cells: the re-centred head leaves them near-neutral (top logit far below a digit's)
    digits = torch.from_numpy(np.stack([ds.cell_digits(i) for i in range(len(ds))]))
    assert scores[:, 0][digits < 0].mean() < 0.3 * scores[:, 0][digits >= 0].mean()


@pytest.mark.slow
def test_annotate_cli_on_exported_canvases_gives_the_same_maps(annotator, tmp_path, run):
    ds = DigitsMain('train', num_samples=12, seed=2)
    ds.export_image_folder(str(tmp_path / 'images'))
    run(['-m', 'timm_multilabel.cli', 'annotate', '--model', f'local-dir:{annotator}', '--pretrained',
         '--img-size', '128', '--topk', '4', '--dtype', 'float32', '--data-dir', tmp_path / 'images',
         '--output', tmp_path / 'cli', '--workers', '0', '--batch-size', '5'],
        env={'CUDA_VISIBLE_DEVICES': ''})  # on the CPU, like write_machine_maps below (same kernels)
    api = load_label_maps(str(write_machine_maps(ds, annotator, tmp_path / 'api', topk=4, dtype='float32')))
    cli = load_label_maps(str(tmp_path / 'cli'))
    assert cli.map_size == api.map_size == (4, 4) and sorted(cli.image_ids) == sorted(ds.image_ids)
    s1, c1 = cli.get_batch(ds.image_ids)
    s2, c2 = api.get_batch(ds.image_ids)
    assert torch.equal(c1[:, 0], c2[:, 0])
    assert torch.allclose(s1, s2, atol=1e-4)
