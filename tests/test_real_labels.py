"""ImageNet ReaL label loading: timm's bundled file, user files, file-name mapping, checks."""
import json

import pytest

from timm_multilabel.data.real_labels import (
    IMAGENET_VAL_SIZE, check_real_labels, default_real_labels_path, load_real_labels,
    real_labels_for_files, val_filename,
)
from timm_multilabel.errors import UserError


@pytest.fixture(scope='module')
def bundled():
    return load_real_labels()


def test_bundled_file(bundled):
    assert default_real_labels_path().endswith('imagenet_real_labels.json')
    assert len(bundled) == IMAGENET_VAL_SIZE == 50_000
    empty = sum(1 for r in bundled if not r)
    # ReaL: 46,837 labelled images (Beyer et al. 2020; MILe Sec. 4.1), so 3,163 empty lists.
    assert empty == 50_000 - 46_837
    assert sum(len(r) for r in bundled) == 57_553  # 57,553 labels in total
    assert all(0 <= c < 1000 for r in bundled for c in r)
    # Entries as printed at the start of the file: image 1 empty, image 2 {970, 795}.
    assert bundled[0] == [] and bundled[1] == [970, 795]


def test_val_filename():
    assert val_filename(0) == 'ILSVRC2012_val_00000001.JPEG'
    assert val_filename(49_999) == 'ILSVRC2012_val_00050000.JPEG'


def test_real_labels_for_files(bundled):
    files = [
        '/data/imagenet/val/n01751748/ILSVRC2012_val_00000002.JPEG',  # entry 1
        'ILSVRC2012_val_00050000.JPEG',                               # entry 49999
        'val\\n0000\\ILSVRC2012_val_00000001.JPEG',                  # Windows path, entry 0
        'ILSVRC2012_val_00000003',                                    # bare key (webdataset)
    ]
    out = real_labels_for_files(files, bundled)
    assert out == [[970, 795], bundled[49_999], [], bundled[2]]
    assert out[0] is not bundled[1]  # copies, not aliases


@pytest.mark.parametrize('name, match', [
    ('val/n01/ILSVRC2012_val_00050001.JPEG', 'ILSVRC2012_val_00050001.JPEG has no entry'),
    ('val/n01/ILSVRC2012_val_00000000.JPEG', 'has no entry'),
    ('val/n01/n01440764_10026.JPEG', 'n01440764_10026.JPEG is not an ImageNet validation file name'),
])
def test_real_labels_for_files_errors(bundled, name, match):
    with pytest.raises(UserError, match=match):
        real_labels_for_files(['ILSVRC2012_val_00000001.JPEG', name, 'also_bad.JPEG'], bundled)


def test_user_file_round_trip(tmp_path):
    path = tmp_path / 'real.json'
    labels = [[1, 2], [], [0]]
    path.write_text(json.dumps(labels))
    assert load_real_labels(path) == labels
    assert load_real_labels(str(path)) == labels
    assert real_labels_for_files(['x/ILSVRC2012_val_00000003.JPEG'], labels) == [[0]]


@pytest.mark.parametrize('text, match', [
    ('[[1], [2', 'not valid JSON'),
    ('{"a": [1]}', 'must hold a JSON list'),
    ('[[1], 2]', r'entry 1 \(ILSVRC2012_val_00000002.JPEG\)'),
    ('[[1], [-3]]', 'entry 1'),
    ('[[1.5]]', 'entry 0'),
    ('[[true]]', 'entry 0'),
])
def test_user_file_errors(tmp_path, text, match):
    path = tmp_path / 'real.json'
    path.write_text(text)
    with pytest.raises(UserError, match=match) as info:
        load_real_labels(path)
    assert '\n' not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='file not found'):
        load_real_labels(tmp_path / 'nope.json')


def test_check_real_labels(bundled):
    check_real_labels(bundled, 50_000, 'ImageNet val')
    with pytest.raises(UserError, match='50000 ReaL entries but --val-split validation has 10000 images'):
        check_real_labels(bundled, 10_000, '--val-split validation')
