"""``timm-multilabel check-images``: decode every image of a folder; exit 0 / 1 / 2."""
import json

import numpy as np
import pytest
from PIL import Image

from timm_multilabel.cli import main
from timm_multilabel.data.image_check import check_images


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / 'imgs'
    rng = np.random.default_rng(0)
    for rel in ('a/1.jpg', 'a/2.png', 'b/3.png', 'b/deep/4.webp', '16bit.png'):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == '16bit.png':
            Image.fromarray(np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)).save(root / rel)
        else:
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / rel)
    (root / 'README.txt').write_text('not an image')
    (root / 'b' / 'loop').symlink_to('..', target_is_directory=True)
    return root


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_all_good_exits_0(folder, tmp_path, capsys):
    assert main(['check-images', str(folder), '--workers', '2', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert f'checked 5 images under {folder}: 5 ok, 0 bad' in out and 'bad:' not in out


def test_bad_images_listed_exit_1_and_json(folder, tmp_path, capsys):
    _cut(folder / 'a' / '1.jpg')
    (folder / 'b' / '3.png').write_bytes(b'junk')
    report = tmp_path / 'r.json'
    assert main(['check-images', str(folder), '--workers', '2', '--json', str(report)]) == 1
    out = capsys.readouterr().out.splitlines()
    bad = [ln for ln in out if ln.startswith('bad: ')]
    assert len(bad) == 2
    assert bad[0].startswith(f'bad: corrupt image {folder / "a" / "1.jpg"} (OSError: ')
    assert bad[1].startswith(f'bad: corrupt image {folder / "b" / "3.png"} (UnidentifiedImageError: ')
    assert f'checked 5 images under {folder}: 3 ok, 2 bad' in out
    data = json.loads(report.read_text())
    assert data['images'] == 5 and data['ok'] == 3 and data['ignored'] == 1
    assert [b['path'] for b in data['bad']] == [str(folder / 'a' / '1.jpg'), str(folder / 'b' / '3.png')]
    assert data['links_skipped'] == [str(folder / 'b' / 'loop')]
    # in-process gives the same answer
    assert check_images(str(folder), workers=0, progress=False).bad == [(b['path'], b['error']) for b in data['bad']]


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(['check-images', str(tmp_path / 'missing')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'timm-multilabel check-images: error: image folder not found: {tmp_path / "missing"}']
    assert main(['check-images', str(tmp_path), '--workers', '-1']) == 2
    assert '--workers -1: must be >= 0' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert main(['check-images', str(tmp_path / 'empty')]) == 2
    assert 'no images found under' in capsys.readouterr().err
