"""Dataset factory: digits-grid by name, timm folder datasets, image ids, class info, errors."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from timm_multilabel.data import (
    DigitsGrid, create_dataset, get_class_names, get_image_ids, get_num_classes, get_real_labels)
from timm_multilabel.errors import UserError


@pytest.fixture
def image_folder(tmp_path):
    """root/train/<class>/<file> and root/validation/<class>/<file>, a few tiny images."""
    files = {
        'train': ['cat/c1.jpg', 'cat/c.2.png', 'dog/d1.png'],
        'validation': ['cat/v1.png', 'dog/sub/v2.jpeg'],
    }
    for split, names in files.items():
        for k, name in enumerate(names):
            path = tmp_path / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new('RGB', (10, 6), (k * 40, 0, 0)).save(path)
    return tmp_path


def test_digits_grid_by_name_and_split_mapping():
    ds = create_dataset('digits-grid', split='train', seed=3, num_samples=20, cell_size=8)
    assert isinstance(ds, DigitsGrid) and ds.split == 'train' and len(ds) == 20 and ds.cell_size == 8
    ref = DigitsGrid('train', num_samples=20, seed=3, cell_size=8)
    np.testing.assert_array_equal(ds.labels, ref.labels)
    for split in ('validation', 'val', 'test'):
        assert create_dataset('digits-grid', split=split, num_samples=5).split == 'test'
    # timm-only options are ignored, transform is applied
    ds = create_dataset('digits-grid', split='val', num_samples=5, class_map=None, batch_size=4,
                        transform=lambda im: im.size)
    assert ds[0][0] == (48, 48)
    assert get_image_ids(ds) == [f'test/{i:06d}' for i in range(5)]
    assert get_real_labels(ds) == [sorted(set(ds.cell_digits(i).ravel().tolist())) for i in range(5)]
    assert get_num_classes(ds) == 10 and get_class_names(ds) == [str(d) for d in range(10)]


def test_subset_ids_and_real_labels():
    ds = DigitsGrid('test', num_samples=10)
    sub = torch.utils.data.Subset(ds, [7, 2])
    assert get_image_ids(sub) == ['test/000007', 'test/000002']
    assert get_real_labels(sub) == [ds.real_labels[7], ds.real_labels[2]]


def test_image_folder_ids_relative_to_split_root(image_folder):
    ds = create_dataset('', root=str(image_folder), split='train')
    assert sorted(get_image_ids(ds)) == ['cat/c.2', 'cat/c1', 'dog/d1']
    # ids follow dataset order: sample i's file is the id plus an extension
    for i, image_id in enumerate(get_image_ids(ds)):
        assert ds.filename(i).replace('\\', '/').rsplit('.', 1)[0] == image_id
    assert get_num_classes(ds) == 2 and get_class_names(ds) == ['cat', 'dog']
    assert get_real_labels(ds) is None
    img, target = ds[0]
    assert img.mode == 'RGB' and target in (0, 1)
    val = create_dataset('imagefolder', root=str(image_folder), split='validation')
    assert sorted(get_image_ids(val)) == ['cat/v1', 'dog/sub/v2']


def test_image_folder_transform(image_folder):
    ds = create_dataset('', root=str(image_folder), split='train', transform=lambda im: im.size)
    assert ds[0][0] == (10, 6)


def test_missing_data_dir_is_user_error(tmp_path):
    missing = tmp_path / 'nope'
    with pytest.raises(UserError, match=f'--data-dir {missing}: no such directory'):
        create_dataset('', root=str(missing))
    with pytest.raises(UserError, match='no such directory'):
        create_dataset('torch/cifar10', root=str(missing))
    with pytest.raises(UserError, match='--data-dir is required'):
        create_dataset('imagefolder', root=None)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='no images found'):
        create_dataset('', root=str(tmp_path / 'empty'))


def test_bad_digits_option_is_user_error():
    with pytest.raises(UserError, match='digits-grid'):
        create_dataset('digits-grid', num_samples=3, no_such_option=1)


def test_hf_dataset_ids(tmp_path, monkeypatch):
    """A local Parquet dataset read through timm's hfds reader: ids from the image_id column, else the index."""
    datasets = pytest.importorskip('datasets')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    imgs = [Image.new('RGB', (4, 4), (i * 60, 0, 0)) for i in range(3)]
    features = datasets.Features({
        'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b']),
        'image_id': datasets.Value('string')})
    hf = datasets.Dataset.from_dict(
        {'image': imgs, 'label': [0, 1, 0], 'image_id': ['x/1', 'x/2', 'y/3']}, features=features)
    for name, table in (('with_ids', hf), ('no_ids', hf.remove_columns('image_id'))):
        (tmp_path / name / 'data').mkdir(parents=True)
        table.to_parquet(str(tmp_path / name / 'data' / 'train-00000-of-00001.parquet'))

    ds = create_dataset(f'hfds/{tmp_path / "with_ids"}', root=str(tmp_path / 'cache'), split='train')
    assert get_image_ids(ds) == ['x/1', 'x/2', 'y/3']
    assert get_class_names(ds) == ['a', 'b'] and get_num_classes(ds) == 2
    img, target = ds[1]
    assert target == 1 and np.asarray(img)[0, 0].tolist() == [60, 0, 0]
    ds = create_dataset(f'hfds/{tmp_path / "no_ids"}', root=str(tmp_path / 'cache'), split='train')
    assert get_image_ids(ds) == ['0', '1', '2']


# ---- safe listing: symlinks followed once ------------------------------------------------------

def _tree(root, names):
    for k, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (4, 4), (k * 20, 0, 0)).save(path)


LOOP_FILES = ['cat/c1.jpg', 'cat/c2.png', 'cat/sub/c3.png', 'dog/d1.png', 'dog/d.2.jpeg', 'top.png']


def _looped(tmp_path):
    """train/ with LOOP_FILES, a link to an ancestor (cat/sub/up -> ../..) and a second loop
    (dog/again -> .. , dog/round -> ../../train); a plain copy without links beside it."""
    root = tmp_path / 'looped' / 'train'
    _tree(root, LOOP_FILES)
    (root / 'cat' / 'sub' / 'up').symlink_to('../..', target_is_directory=True)
    (root / 'dog' / 'again').symlink_to('..', target_is_directory=True)
    (root / 'dog' / 'round').symlink_to('../../train', target_is_directory=True)
    (root / 'notes.txt').write_text('not an image')
    _tree(tmp_path / 'plain' / 'train', LOOP_FILES)
    return tmp_path / 'looped', tmp_path / 'plain'


def test_symlink_loops_are_listed_once_with_timm_semantics(tmp_path, caplog):
    import time

    import timm.data
    looped, plain = _looped(tmp_path)
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger='timm_multilabel'):
        ds = create_dataset('', root=str(looped), split='train')
    assert time.perf_counter() - t0 < 5
    ref = timm.data.create_dataset('', root=str(plain), split='train')  # timm on the loop-free copy
    assert len(ds) == len(LOOP_FILES) == len(ref)
    assert get_image_ids(ds) == get_image_ids(ref)  # same ids, same order
    assert ds.reader.class_to_idx == ref.reader.class_to_idx == {'': 0, 'cat': 1, 'dog': 2, 'sub': 3}
    assert [t for _, t in ds.reader.samples] == [t for _, t in ref.reader.samples]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all('already listed' in w for w in warnings)
    assert any(w.startswith(str(looped / 'train' / 'cat' / 'sub' / 'up') + ':') for w in warnings)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f'{looped / "train"}: 6 images, 3 symlinked folders skipped (already listed), 1 non-image files ignored' in info
    # a class map and the reader's types (timm's input_key) still work
    ds = create_dataset('', root=str(looped), split='train', class_map={'cat': 0, 'dog': 1}, input_key='.png')
    assert sorted(get_image_ids(ds)) == ['cat/c2', 'dog/d1']


def test_a_link_outside_the_root_is_followed_once(tmp_path):
    _tree(tmp_path / 'elsewhere', ['e1.png', 'deep/e2.png'])
    root = tmp_path / 'data'
    _tree(root, ['a/x.png'])
    (root / 'b').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
    (root / 'c').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)  # second link: skipped
    (root / 'a' / 'file_link.png').symlink_to(root / 'a' / 'x.png')  # file links are files
    ds = create_dataset('', root=str(root), split='train')
    assert get_image_ids(ds) == ['a/file_link', 'a/x', 'b/deep/e2', 'b/e1']
    assert get_class_names(ds) == ['a', 'b', 'deep']


def test_bad_image_options_reach_folder_and_tar_datasets(image_folder, tmp_path):
    import tarfile

    from timm_multilabel.data.bad_images import CheckedImageDataset
    ds = create_dataset('', root=str(image_folder), split='train', skip_bad_images=True, skip_log=tmp_path / 's')
    assert isinstance(ds, CheckedImageDataset) and ds.skip_bad_images and ds.skip_log.path == str(tmp_path / 's')
    with tarfile.open(tmp_path / 'd.tar', 'w') as tar:
        tar.add(image_folder / 'train' / 'cat', arcname='cat')
    ds = create_dataset('', root=str(tmp_path / 'd.tar'), split='train', skip_bad_images=True)
    assert isinstance(ds, CheckedImageDataset) and ds.skip_bad_images and len(ds) == 2
    assert ds[0][0].mode == 'RGB'


# ---- timm's dataset flags (--class-map --input-img-mode --input-key --target-key ...) and local HF datasets ----

def _classes_folder(root, classes=('cat', 'dog', 'emu'), per_class=2):
    """root/{train,validation}/<class>/<k>.png, pixel red = 40 * class position + k."""
    for split in ('train', 'validation'):
        for c, name in enumerate(classes):
            for k in range(per_class):
                path = root / split / name / f'{k}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new('RGB', (6, 6), (40 * c + k, 7, 9)).save(path)
    return root


def _hf_table(datasets, n=6):
    """Columns: img (RGB, red = row), photo (decoy images), fine (ClassLabel a/b/c), coarse (ClassLabel x/y)."""
    features = datasets.Features({
        'img': datasets.Image(), 'photo': datasets.Image(),
        'fine': datasets.ClassLabel(names=['a', 'b', 'c']), 'coarse': datasets.ClassLabel(names=['x', 'y'])})
    return datasets.Dataset.from_dict({
        'img': [Image.new('RGB', (4, 4), (10 * i, 1, 2)) for i in range(n)],
        'photo': [Image.new('RGB', (4, 4), (255, 255, 255)) for _ in range(n)],
        'fine': [i % 3 for i in range(n)], 'coarse': [i % 2 for i in range(n)]}, features=features)


def test_class_map_reorders_and_limits_folder_classes_like_timm(tmp_path):
    import timm.data
    root = _classes_folder(tmp_path / 'data')
    (tmp_path / 'map.txt').write_text('emu\ncat\n')  # timm: line number = class index; dog is left out
    ds = create_dataset('', root=str(root), split='train', class_map=str(tmp_path / 'map.txt'))
    assert get_class_names(ds) == ['emu', 'cat'] and get_num_classes(ds) == 2
    assert sorted(get_image_ids(ds)) == ['cat/0', 'cat/1', 'emu/0', 'emu/1']
    for i in range(len(ds)):
        img, target = ds[i]
        assert target == {80: 0, 0: 1}[np.asarray(img)[0, 0, 0] // 40 * 40]  # emu (red 80+k) -> 0, cat -> 1
    ref = timm.data.create_dataset('', root=str(root), split='train', class_map=str(tmp_path / 'map.txt'))
    assert [t for _, t in ds.reader.samples] == [t for _, t in ref.reader.samples]
    # timm also finds a relative class map file under the split folder
    (root / 'validation' / 'm.txt').write_text('dog\n')
    val = create_dataset('', root=str(root), split='validation', class_map='m.txt')
    assert get_class_names(val) == ['dog'] and len(val) == 2


def test_class_map_errors_are_one_line(tmp_path):
    root = _classes_folder(tmp_path / 'data')
    with pytest.raises(UserError, match=r'^--class-map nope.txt: no such file$'):
        create_dataset('', root=str(root), split='train', class_map='nope.txt')
    (tmp_path / 'map.json').write_text('{}')
    with pytest.raises(UserError, match=r'^--class-map .*map.json: expected a .txt file'):
        create_dataset('', root=str(root), split='train', class_map=str(tmp_path / 'map.json'))


def test_input_img_mode_L_gives_one_channel_images(tmp_path):
    datasets = pytest.importorskip('datasets')
    root = _classes_folder(tmp_path / 'data')
    assert create_dataset('', root=str(root), split='train', input_img_mode='L')[0][0].mode == 'L'
    assert create_dataset('', root=str(root), split='train', in_chans=1)[0][0].mode == 'L'  # timm's default rule
    assert create_dataset('', root=str(root), split='train')[0][0].mode == 'RGB'
    datasets.DatasetDict(train=_hf_table(datasets)).save_to_disk(str(tmp_path / 'dd'))
    img, _ = create_dataset(f'hfds/{tmp_path / "dd"}', split='train', input_key='img', target_key='fine',
                            input_img_mode='L')[3]
    assert img.mode == 'L' and np.asarray(img).shape == (4, 4)


def test_input_and_target_keys_pick_columns_of_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip('datasets')
    table = _hf_table(datasets)
    datasets.DatasetDict(train=table, validation=table.select([0, 1])).save_to_disk(str(tmp_path / 'dd'))
    name = f'hfds/{tmp_path / "dd"}'
    ds = create_dataset(name, split='train', input_key='img', target_key='coarse')
    assert len(ds) == 6 and get_class_names(ds) == ['x', 'y']
    for i in (0, 3, 5):
        img, target = ds[i]
        assert np.asarray(img)[0, 0].tolist() == [10 * i, 1, 2] and target == i % 2
    ds = create_dataset(name, split='validation', input_key='img', target_key='fine')
    assert len(ds) == 2 and get_class_names(ds) == ['a', 'b', 'c'] and ds[1][1] == 1
    assert np.asarray(create_dataset(name, split='train', input_key='photo', target_key='fine')[2][0])[0, 0, 0] == 255
    with pytest.raises(UserError, match=r'^--input-key image: no such column in --dataset hfds/.*\(columns: img, '):
        create_dataset(name, split='train')  # timm's defaults are image / label
    with pytest.raises(UserError, match=r'^--target-key label: no such column'):
        create_dataset(name, split='train', input_key='img')
    # a class map reorders and limits the classes: rows of a left-out class are dropped (as a folder's images)
    (tmp_path / 'map.txt').write_text('c\na\n')
    ds = create_dataset(name, split='train', input_key='img', target_key='fine', class_map=str(tmp_path / 'map.txt'))
    assert get_class_names(ds) == ['c', 'a'] and len(ds) == 4
    assert [(np.asarray(ds[i][0])[0, 0, 0] // 10, ds[i][1]) for i in range(4)] == [(0, 1), (2, 0), (3, 1), (5, 0)]


def test_local_hf_dataset_forms(tmp_path):
    """hfds/imagefolder --data-dir DIR (data_dir=DIR), a save_to_disk folder, a local Parquet folder."""
    datasets = pytest.importorskip('datasets')
    root = _classes_folder(tmp_path / 'images', classes=('cat', 'dog'))
    ds = create_dataset('hfds/imagefolder', root=str(root), split='validation')
    assert len(ds) == 4 and get_class_names(ds) == ['cat', 'dog']
    assert sorted(ds[i][1] for i in range(4)) == [0, 0, 1, 1]
    assert sorted(np.asarray(ds[i][0])[0, 0, 0] for i in range(4) if ds[i][1] == 1) == [40, 41]
    table = _hf_table(datasets)
    parquet = tmp_path / 'pq'
    (parquet / 'data').mkdir(parents=True)
    table.to_parquet(str(parquet / 'data' / 'train-00000-of-00001.parquet'))
    table.select([4]).to_parquet(str(parquet / 'data' / 'validation-00000-of-00001.parquet'))
    for ds in (create_dataset(f'hfds/{parquet}', split='validation', input_key='img', target_key='fine',
                              root=str(tmp_path / 'cache')),
               create_dataset('hfds/parquet', root=str(parquet / 'data'), split='validation', input_key='img',
                              target_key='fine')):
        assert len(ds) == 1 and ds[0][1] == 1 and np.asarray(ds[0][0])[0, 0, 0] == 40


def test_local_hf_dataset_errors_are_one_line(tmp_path):
    datasets = pytest.importorskip('datasets')
    with pytest.raises(UserError, match=r"^--dataset hfds/imagefolder needs --data-dir DIR, the folder of its files"):
        create_dataset('hfds/imagefolder', split='train')
    with pytest.raises(UserError, match=r'^--data-dir .*nope: no such directory$'):
        create_dataset('hfds/imagefolder', root=str(tmp_path / 'nope'), split='train')
    with pytest.raises(UserError, match=r'^--dataset hfds/.*missing: no such folder$'):
        create_dataset(f'hfds/{tmp_path / "missing"}', split='train')
    _hf_table(datasets).save_to_disk(str(tmp_path / 'one'))
    with pytest.raises(UserError, match=r'a single Dataset written by save_to_disk .* save a DatasetDict'):
        create_dataset(f'hfds/{tmp_path / "one"}', split='train', input_key='img', target_key='fine')
    datasets.DatasetDict(train=_hf_table(datasets)).save_to_disk(str(tmp_path / 'dd'))
    with pytest.raises(UserError, match=r"^--dataset hfds/.*dd: no split 'validation' \(splits: train\); name"):
        create_dataset(f'hfds/{tmp_path / "dd"}', split='validation', input_key='img', target_key='fine')
    root = _classes_folder(tmp_path / 'images', classes=('cat',))
    with pytest.raises(UserError, match=r"^--dataset hfds/imagefolder: no split 'test' .*--val-split$"):
        create_dataset('hfds/imagefolder', root=str(root), split='test')
    with pytest.raises(UserError, match=r'^--dataset-trust-remote-code: datasets .* has no loading scripts'):
        create_dataset('hfds/imagefolder', root=str(root), split='train', trust_remote_code=True)


@pytest.mark.parametrize('name,options,message', [
    ('digits-grid', dict(class_map='m.txt'), '--class-map does not apply to the built-in digits-grid data'),
    ('digits-grid', dict(input_img_mode='L'), '--input-img-mode does not apply to the built-in digits-grid'),
    ('digits-grid', dict(download=True), '--dataset-download does not apply to the built-in digits-grid'),
    ('', dict(target_key='label'), '--target-key does not apply to an image folder; it applies to hfds/'),
    ('', dict(trust_remote_code=True), '--dataset-trust-remote-code does not apply to an image folder'),
    ('torch/cifar10', dict(input_key='img'), "--input-key does not apply to torchvision's torch/cifar10"),
    ('torch/cifar10', dict(class_map='m.txt'), "--class-map does not apply to torchvision's torch/cifar10"),
    ('hfds/org/x', dict(download=True), '--dataset-download does not apply to hfds/org/x; it applies to torch/'),
])
def test_dataset_options_that_mean_nothing_are_refused(tmp_path, name, options, message):
    with pytest.raises(UserError, match='^' + message.replace('(', r'\(')):
        create_dataset(name, root=str(tmp_path), split='train', num_samples=4, **options)
