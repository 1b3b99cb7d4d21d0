"""Decoding images: every mode to 8-bit RGB by scaling, one-line BadImageError, skip mode and drop_missing."""
import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from timm_multilabel.data import create_dataset, get_image_ids
from timm_multilabel.data.bad_images import CheckedImageDataset, SkipLog, drop_missing, read_skip_log
from timm_multilabel.data.images import BadImageError, bad_image_message, load_image, load_rgb, to_rgb
from timm_multilabel.errors import UserError
from timm_multilabel.relabel.boxed_dataset import BoxedDataset
from timm_multilabel.relabel.collate import LabelPoolingCollate
from timm_multilabel.relabel.image_folder import read_image

GRADIENT16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # [4, 256], left dark


def _assert_gradient(img):
    """Gray, 0 at the left, 255 at the right, non-decreasing, many levels (not saturated)."""
    a = np.asarray(img)
    assert img.mode == 'RGB' and a.dtype == np.uint8
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    row = a[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()
    assert len(np.unique(row)) == 256
    return row


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _noise(size=(48, 64), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


# ---- modes -------------------------------------------------------------------------------------


def test_16bit_png_gradient_maps_to_0_255_not_white(tmp_path):
    path = tmp_path / 'g16.png'
    Image.fromarray(GRADIENT16).save(path)  # a real 16-bit grayscale PNG
    with Image.open(path) as raw:
        assert raw.mode == 'I;16'
        assert (np.asarray(raw.convert('RGB')) == 255).mean() > 0.9  # what plain convert does
    row = _assert_gradient(load_rgb(path))
    np.testing.assert_array_equal(row, GRADIENT16[0].astype(int) >> 8)
    _assert_gradient(read_image(str(path)))  # annotate reads the same way


def test_16bit_big_endian_and_32bit_int_tiffs(tmp_path):
    big = Image.frombytes('I;16B', (256, 4), GRADIENT16.astype('>u2').tobytes())
    big.save(tmp_path / 'b.tif')
    Image.fromarray(GRADIENT16.astype(np.int32)).save(tmp_path / 'i.tif')
    for name, mode in (('b.tif', 'I;16B'), ('i.tif', 'I')):
        with Image.open(tmp_path / name) as raw:
            assert raw.mode == mode
        _assert_gradient(load_rgb(tmp_path / name))
    # 'I' beyond 16 bits is clamped, not wrapped
    wide = Image.fromarray(np.array([[-5, 70000, 32768]], dtype=np.int32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 255, 128]


def test_float_images(tmp_path):
    unit = Image.fromarray(np.tile(np.linspace(0, 1, 256, dtype=np.float32), (4, 1)))
    unit.save(tmp_path / 'f.tif')
    with Image.open(tmp_path / 'f.tif') as raw:
        assert raw.mode == 'F'
    _assert_gradient(load_rgb(tmp_path / 'f.tif'))
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 300.0, np.nan]], dtype=np.float32))
    assert np.asarray(to_rgb(byte_range))[0, :, 0].tolist() == [0, 100, 255, 0]


def test_alpha_palette_cmyk_and_gray(tmp_path):
    la = Image.new('LA', (4, 2), (0, 0))  # black, fully transparent ...
    la.putpixel((0, 0), (50, 255))  # ... but one opaque dark pixel
    la.save(tmp_path / 'la.png')
    a = np.asarray(load_rgb(tmp_path / 'la.png'))
    assert a[0, 0].tolist() == [50, 50, 50] and a[1, 3].tolist() == [255, 255, 255]

    p = Image.new('P', (4, 2), 0)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info['transparency'] = 0
    p.save(tmp_path / 'p.png')
    with Image.open(tmp_path / 'p.png') as raw:
        assert raw.mode == 'P' and 'transparency' in raw.info
    a = np.asarray(load_rgb(tmp_path / 'p.png'))
    assert a[0, 1].tolist() == [200, 10, 10] and a[0, 0].tolist() == [255, 255, 255]

    Image.new('CMYK', (4, 4), (0, 255, 255, 0)).save(tmp_path / 'c.jpg')  # pure red in CMYK
    r, g, b = np.asarray(load_rgb(tmp_path / 'c.jpg')).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60

    Image.new('L', (3, 3), 77).save(tmp_path / 'l.png')
    assert np.asarray(load_rgb(tmp_path / 'l.png')).reshape(-1, 3).tolist() == [[77, 77, 77]] * 9
    rgb = _noise()
    rgb.save(tmp_path / 'rgb.png')
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / 'rgb.png')), np.asarray(rgb))
    assert load_image(tmp_path / 'l.png', 'L').mode == 'L'
    assert load_image(tmp_path / 'l.png', None).mode == 'L'  # timm's input_img_mode None: as decoded


# ---- one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize('ext', ['jpg', 'png'])
def test_truncated_image_is_one_line_bad_image_error(tmp_path, ext):
    path = tmp_path / f'cut.{ext}'
    _noise().save(path)
    _truncate(path)
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    msg = str(info.value)
    assert isinstance(info.value, UserError) and '\n' not in msg
    assert msg.startswith(f'corrupt image {path} (OSError: ') and 'runcated' in msg
    assert info.value.path == str(path)
    with pytest.raises(BadImageError, match='corrupt image'):
        read_image(str(path))


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / 'junk.jpg').write_bytes(b'not a jpeg at all')
    with pytest.raises(BadImageError, match=r'corrupt image .*junk\.jpg \(UnidentifiedImageError: '):
        load_rgb(tmp_path / 'junk.jpg')
    with pytest.raises(BadImageError, match=r'cannot read image .*gone\.png \(FileNotFoundError: '):
        load_rgb(tmp_path / 'gone.png')
    e = pickle.loads(pickle.dumps(BadImageError('corrupt image x (y)', 'x', 'y')))
    assert (str(e), e.path, e.reason) == ('corrupt image x (y)', 'x', 'y')


@pytest.fixture
def folder_with_bad(tmp_path):
    """train/<class>/<file>: 5 good images and one truncated JPEG (cat/c2.jpg)."""
    root = tmp_path / 'data'
    for k, rel in enumerate(['cat/c1.png', 'cat/c2.jpg', 'cat/c3.png', 'dog/d1.png', 'dog/d2.png', 'dog/d3.png']):
        path = root / 'train' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _noise((16, 16), seed=k).save(path)
    bad = root / 'train' / 'cat' / 'c2.jpg'
    _truncate(bad, 0.4)
    return root, bad


def _to_tensor(img):
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def test_training_dataset_raises_instead_of_substituting(folder_with_bad):
    root, bad = folder_with_bad
    ds = create_dataset('', root=str(root), split='train', transform=_to_tensor)
    assert isinstance(ds, CheckedImageDataset)
    i = get_image_ids(ds).index('cat/c2')
    with pytest.raises(BadImageError) as info:
        ds[i]
    assert str(info.value).startswith(f'corrupt image {bad} (OSError: ') and 'runcated' in str(info.value)
    assert bad_image_message(info.value) == str(info.value)
    assert ds[i + 1][1] == 0  # the neighbours are fine


def test_bad_image_in_a_dataloader_worker_gives_the_one_line(folder_with_bad):
    root, bad = folder_with_bad
    ds = create_dataset('', root=str(root), split='train', transform=_to_tensor)
    batches = iter(DataLoader(ds, batch_size=2, num_workers=2))
    try:
        for _ in batches:
            pass
        raise AssertionError('no error')
    except BadImageError as e:  # torch re-raises the worker's exception type with a multi-line text
        error = e.with_traceback(None)
    finally:
        batches._shutdown_workers()
        del batches
    assert 'Caught BadImageError in DataLoader worker process' in str(error)
    msg = bad_image_message(error)
    assert msg is not None and '\n' not in msg
    assert msg.startswith(f'corrupt image {bad} (OSError: ') and 'runcated' in msg
    # also when a caller wraps it
    try:
        try:
            raise error
        except Exception as e:
            raise RuntimeError('training failed') from e
    except RuntimeError as wrapped:
        assert bad_image_message(wrapped) == msg
    assert bad_image_message(ValueError('something else')) is None


def test_skip_mode_drops_the_sample_and_logs_it_once(folder_with_bad, tmp_path):
    root, bad = folder_with_bad
    log = tmp_path / 'skipped.txt'
    ds = create_dataset('', root=str(root), split='train', transform=_to_tensor, skip_bad_images=True, skip_log=log)
    loader = DataLoader(ds, batch_size=6, num_workers=2, collate_fn=drop_missing(None))
    for _ in range(2):  # two epochs, fresh workers each: dropped again, logged once
        batches = list(loader)
        assert len(batches) == 1
        images, targets = batches[0]
        assert images.shape == (5, 3, 16, 16) and targets.tolist() == [0, 0, 1, 1, 1]
    assert log.read_text() == f'{bad}\n'
    assert read_skip_log(log) == [str(bad)]
    assert read_skip_log(tmp_path / 'none.txt') == []


def test_skip_mode_warns_once_per_file(folder_with_bad, tmp_path, caplog):
    root, bad = folder_with_bad
    ds = create_dataset('', root=str(root), split='train', skip_bad_images=True, skip_log=tmp_path / 's.txt')
    i = get_image_ids(ds).index('cat/c2')
    with caplog.at_level(logging.WARNING, logger='timm_multilabel'):
        assert ds[i] is None and ds[i] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0] and '\n' not in warnings[0]
    # another process (a fresh SkipLog on the same file) neither rewrites nor re-warns
    assert SkipLog(tmp_path / 's.txt').record(str(bad)) is False
    assert SkipLog(None).record('x') is True


def test_drop_missing_with_default_and_label_pooling_collate(folder_with_bad):
    root, bad = folder_with_bad
    assert drop_missing(None)([None, None]) is None
    plain = drop_missing(None)([(torch.zeros(2), 1), None, (torch.ones(2), 0)])
    assert plain[0].shape == (2, 2) and plain[1].tolist() == [1, 0]
    assert drop_missing(default_collate).collate_fn is default_collate
    batch = [(torch.zeros(2), k) for k in range(4)]
    assert drop_missing(None, even=True)(batch[:3] + [None])[1].tolist() == [0, 1]  # 3 left: odd -> 2
    assert drop_missing(None, even=True)(batch[:3])[1].tolist() == [0, 1, 2]  # nothing dropped: as given
    assert drop_missing(None, even=True)(batch + [None, None])[1].tolist() == [0, 1, 2, 3]
    assert isinstance(pickle.loads(pickle.dumps(drop_missing(None))), type(drop_missing(None)))

    ds = create_dataset('', root=str(root), split='train', skip_bad_images=True)
    ids = get_image_ids(ds)

    def box_transform(img):
        return _to_tensor(img).float(), torch.tensor([0.0, 0.0, 1.0, 1.0]), False

    boxed = BoxedDataset(ds, box_transform)
    assert boxed[ids.index('cat/c2')] is None
    maps = {i: (torch.full((1, 2, 2), 5.0), torch.full((1, 2, 2), k % 2, dtype=torch.long)) for k, i in enumerate(ids)}

    class Store:
        num_classes = 2

        def get_batch(self, image_ids):
            s, c = zip(*(maps[i] for i in image_ids))
            return torch.stack(s), torch.stack(c)

        def missing(self, image_ids):
            return []

    collate = drop_missing(LabelPoolingCollate(Store(), 2))
    assert collate.num_classes == 2  # the wrapped collate's attributes
    images, targets = collate([boxed[k] for k in range(len(boxed))])
    assert images.shape == (5, 3, 16, 16) and targets.shape == (5, 2)
    torch.testing.assert_close(targets.sum(1), torch.ones(5))
    strict = BoxedDataset(create_dataset('', root=str(root), split='train'), box_transform)
    with pytest.raises(BadImageError, match='c2.jpg'):
        strict[ids.index('cat/c2')]
