"""train.py on an image folder with an undecodable image: never a silent substitution."""
import json

import numpy as np
import pytest
from PIL import Image

TINY = ['--model', 'test_resnet', '--img-size', '24', '-b', '8', '--workers', '0', '--epochs', '1', '--seed', '0',
        '--log-interval', '1000']


@pytest.fixture
def folder_with_a_truncated_image(tmp_path):
    root = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for split in ('train', 'validation'):
        for cls in ('a', 'b'):
            (root / split / cls).mkdir(parents=True)
            for i in range(16 if split == 'train' else 4):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                    root / split / cls / f'{i:02d}.png')
    bad = root / 'train' / 'b' / '07.png'
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated file
    return root, bad


@pytest.mark.slow
def test_a_corrupt_image_stops_the_run_in_one_line_naming_it(folder_with_a_truncated_image, tmp_path, run):
    root, bad = folder_with_a_truncated_image
    out = tmp_path / 'out'
    proc = run(['train.py', '--dataset', '', '--data-dir', root, *TINY, '--output', out], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the progress lines: the error, one line
    assert last.startswith('train.py: error: corrupt image ') and str(bad) in last, last
    assert '--skip-bad-images' in last
    assert not (out / 'summary.json').exists()


@pytest.mark.slow
def test_skip_bad_images_drops_it_and_lists_it(folder_with_a_truncated_image, tmp_path, run):
    root, bad = folder_with_a_truncated_image
    out = tmp_path / 'out'
    run(['train.py', '--dataset', '', '--data-dir', root, *TINY, '--output', out, '--skip-bad-images'])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['skipped_images'] == [str(bad)]
    assert summary['num_updates'] == 4  # 32 images, batch 8: the batch with the bad image trained on 7
