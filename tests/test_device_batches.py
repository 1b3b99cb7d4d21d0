"""timm's prefetcher loading (training/device_batches.py): uint8 images from the workers, normalized a batch
at a time where the model runs; the same batches as per-sample float loading (--no-prefetcher)."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from timm_multilabel.data import create_dataset
from timm_multilabel.training import loaders
from timm_multilabel.training.args import parse_args
from timm_multilabel.training.device_batches import BatchNormalize, uint8_eval_images, uint8_train_images

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY = ['--dataset', 'digits-grid', '--model', 'test_resnet', '--val-num-samples', '16', '--workers', '0',
        '--img-size', '16', '--seed', '5']


def test_batch_normalize_equals_to_tensor_and_normalize_per_image():
    images = torch.randint(0, 256, (3, 3, 5, 7), dtype=torch.uint8)
    expected = torch.stack([TF.normalize(TF.to_tensor(TF.to_pil_image(im)), MEAN, STD) for im in images])
    got = BatchNormalize(MEAN, STD)(images)
    assert got.dtype == torch.float32 and got.shape == (3, 3, 5, 7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # channel order matters: a swapped mean/std would be off by > 0.1 somewhere
    assert (BatchNormalize(MEAN[::-1], STD[::-1])(images) - expected).abs().max() > 0.1


def test_batch_normalize_passes_float_batches_and_naflex_dicts_unchanged():
    floats = torch.randn(2, 3, 4, 4)
    assert BatchNormalize(MEAN, STD)(floats) is floats
    patches = {'patches': torch.randn(2, 5, 12), 'patch_coord': torch.zeros(2, 5, 2, dtype=torch.int64)}
    assert BatchNormalize(MEAN, STD)(patches) is patches


def _args(*extra):
    return parse_args([*TINY, *extra])[0]


@pytest.mark.parametrize('extra,train,evaluation', [
    ([], True, True),
    (['--no-prefetcher'], False, False),
    (['--reprob', '0.25'], False, True),      # random erasing draws per sample on float images
    (['--aug-splits', '2'], False, True),
    (['--relabel-maps', 'some/maps'], False, True),
    (['--train-img-sizes', '16', '24'], False, True),
    (['--tta', '2'], True, False),
])
def test_which_flags_keep_per_sample_float_images(extra, train, evaluation):
    args = _args(*extra)
    assert uint8_train_images(args) is train
    assert uint8_eval_images(args) is evaluation


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ('train', 'validation'):
        for c in ('a', 'b'):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / split / c / f'{i}.png')
    return tmp_path


def _first_batches(args, root):
    dataset = create_dataset('', root=str(root), split='train', is_training=True, seed=args.seed)
    kwargs = loaders.train_transform_kwargs(args, dict(input_size=(3, 16, 16), mean=MEAN, std=STD))
    dataset = loaders.set_train_transform(dataset, args, kwargs)
    train = loaders.build_train_loader(args, dataset, None, 1)
    train.samples.set_epoch(1)
    torch.manual_seed(0)  # the shuffle
    return list(train.loader)


def test_uint8_loading_gives_the_float_loaders_batches_after_normalization(image_folder):
    flags = ['--data-dir', str(image_folder), '--dataset', '', '-b', '4', '--hflip', '0.5', '--color-jitter', '0.4']
    uint8_batches = _first_batches(_args(*flags), image_folder)
    float_batches = _first_batches(_args(*flags, '--no-prefetcher'), image_folder)
    assert len(uint8_batches) == len(float_batches) == 3
    normalize = BatchNormalize(MEAN, STD)
    for (u, ut), (f, ft) in zip(uint8_batches, float_batches):
        assert u.dtype == torch.uint8 and f.dtype == torch.float32
        torch.testing.assert_close(ut, ft)
        # the same crops, flips and jitter (seeded per sample), up to the uint8 rounding of the jitter
        torch.testing.assert_close(normalize(u), f, atol=1e-5, rtol=0)


def test_train_py_results_do_not_depend_on_the_loading_path(tmp_path):
    import train
    common = [*TINY, '--train-num-samples', '64', '-b', '16', '--epochs', '1', '--lr', '0.01']
    fast = train.main([*common, '--output', str(tmp_path / 'uint8')])
    slow = train.main([*common, '--no-prefetcher', '--output', str(tmp_path / 'float')])
    assert fast['metrics']['top1'] == pytest.approx(slow['metrics']['top1'], abs=1e-6)
    assert fast['metrics']['mAP'] == pytest.approx(slow['metrics']['mAP'], abs=1e-3)
    losses = [next(csv.DictReader(open(tmp_path / run / 'summary.csv'))) for run in ('uint8', 'float')]
    assert float(losses[0]['train_loss']) == pytest.approx(float(losses[1]['train_loss']), rel=1e-4)
    assert float(losses[0]['eval_loss']) == pytest.approx(float(losses[1]['eval_loss']), rel=1e-4)
