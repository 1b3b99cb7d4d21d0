"""Faults an operator meets: kill -9 in the middle of annotate, and bad input refused in one line
with nothing half-written (the README's table; other rows are tested beside their modules)."""
import json
import os

import pytest
import torch

from conftest import kill_when

TINY = ['--model', 'test_resnet', '--train-num-samples', '64', '--val-num-samples', '32', '-b', '16',
        '--workers', '0', '--epochs', '1']


def _one_line_error(proc, *needles):
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in err and '\n' not in err, err
    for needle in needles:
        assert needle in err, err


def test_batch_of_one_with_batchnorm_is_refused(tmp_path, run):
    proc = run(['train.py', *TINY, '-b', '1', '--output', tmp_path / 'out'], check=False)
    _one_line_error(proc, '--batch-size 1', 'BatchNorm')
    assert not (tmp_path / 'out').exists()


def test_real_labels_count_must_match_the_validation_set(tmp_path, run):
    labels = tmp_path / 'real.json'
    labels.write_text(json.dumps([[1], [2], []]))
    proc = run(['train.py', *TINY, '--real-labels', labels, '--output', tmp_path / 'out'], check=False)
    _one_line_error(proc, '3 ReaL entries', '32')
    assert not (tmp_path / 'out').exists()


def test_checkpoint_that_would_run_code_is_refused(tmp_path, run):
    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {tmp_path / "pwned"}',))

    bad = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': Evil()}, bad)
    proc = run(['train.py', *TINY, '--resume', bad, '--output', tmp_path / 'out'], check=False)
    _one_line_error(proc, str(bad))
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.slow
def test_annotate_resume_after_kill_9_gives_the_maps_of_an_uninterrupted_run(tmp_path, run):
    from timm_multilabel.data import DigitsGrid
    from timm_multilabel.relabel.store import load_label_maps

    images = tmp_path / 'images'
    DigitsGrid('train', num_samples=120, seed=0).export_image_folder(images)
    weights = tmp_path / 'w.pth'
    import timm
    torch.manual_seed(0)
    torch.save(timm.create_model('test_resnet', num_classes=1000).state_dict(), weights)
    argv = ['-m', 'timm_multilabel.cli', 'annotate', '--model', 'test_resnet', '--pretrained-path', weights,
            '--data-dir', images, '--img-size', '48', '--topk', '3', '--shard-size', '20', '--batch-size', '10',
            '--workers', '0']
    run([*argv, '--output', tmp_path / 'ref'])

    out = tmp_path / 'maps'
    kill_when([*argv, '--output', out], lambda: len(list((out / 'data').glob('train-*.parquet'))) >= 2,
              env={'OMP_NUM_THREADS': '1'}, what='annotate')
    done = len(list((out / 'data').glob('train-*.parquet')))
    assert 2 <= done < 6
    run([*argv, '--output', out, '--resume'])

    ref = load_label_maps(str(tmp_path / 'ref'), cache_dir=str(tmp_path / 'c1'))
    got = load_label_maps(str(out), cache_dir=str(tmp_path / 'c2'))
    assert got.image_ids == ref.image_ids and len(got) == 120  # each image exactly once
    gs, gc = got.get_batch(ref.image_ids)
    rs, rc = ref.get_batch(ref.image_ids)
    assert torch.equal(gc, rc) and torch.equal(gs, rs)


def test_streaming_dataset_is_refused_before_training(tmp_path, run):
    datasets = pytest.importorskip('datasets')
    from PIL import Image
    hf = datasets.Dataset.from_dict({'image': [Image.new('RGB', (8, 8))] * 4, 'label': [0, 1, 0, 1]},
                                    features=datasets.Features({'image': datasets.Image(),
                                                                'label': datasets.ClassLabel(names=['a', 'b'])}))
    (tmp_path / 'hf' / 'data').mkdir(parents=True)
    hf.to_parquet(str(tmp_path / 'hf' / 'data' / 'train-00000-of-00001.parquet'))
    proc = run(['train.py', *TINY, '--dataset', f'hfids/{tmp_path / "hf"}', '--data-dir', tmp_path / 'cache',
                '--num-classes', '2', '--output', tmp_path / 'out'], check=False, env={'HF_DATASETS_OFFLINE': '1'})
    _one_line_error(proc, 'streaming datasets are not supported')
    assert not (tmp_path / 'out').exists()


def test_mid_epoch_checkpoint_longer_than_the_epoch_is_refused(tmp_path, run):
    out = tmp_path / 'out'
    run(['train.py', *TINY, '--output', out])  # 64 samples, batch 16: 4 batches an epoch
    ckpt = torch.load(out / 'last.pth.tar', weights_only=True)
    ckpt['epoch_progress'] = {'epoch': 1, 'batches': 10, 'loss_sum': 0.0, 'loss_count': 0, 'seconds': 0.0}
    torch.save(ckpt, out / 'last.pth.tar')
    before = sorted(p.name for p in out.iterdir())
    proc = run(['train.py', *TINY, '--epochs', '2', '--output', out, '--resume', out], check=False)
    _one_line_error(proc, 'the checkpoint is 10 batches into epoch 1, which has only 4 batches')
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize('flags,needles', [
    (['--num-classes', '12'], ['--num-classes 12: the training data has 10 classes']),
    (['--num-classes', '5'], ['--num-classes 5: the training data has 10 classes']),
    (['--model', 'resnet-50'], ['--model resnet-50: not a timm model; did you mean resnet50']),
    (['--lr', 'nan'], ['--lr nan: must be a finite number']),
])
def test_values_that_would_fail_mid_training_are_refused_before_it(tmp_path, run, flags, needles):
    proc = run(['train.py', *TINY, *flags, '--output', tmp_path / 'out'], check=False)
    _one_line_error(proc, *needles)
    assert not (tmp_path / 'out').exists()


def test_an_output_that_cannot_be_created_is_refused(tmp_path, run):
    (tmp_path / 'file').write_text('x')
    proc = run(['train.py', *TINY, '--output', tmp_path / 'file' / 'out'], check=False)
    _one_line_error(proc, 'cannot be created', 'is not a writable folder')


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path, run):
    out = tmp_path / 'out'
    out.mkdir()
    stale = [out / '.last.pth.tar.tmp-999999', out / '.summary.json.tmp-999998-abc']
    for path in stale:
        path.write_bytes(b'half a file')
    run(['train.py', *TINY, '--output', out, '--overwrite'])
    assert not any(p.exists() for p in stale)
    assert not [p for p in out.iterdir() if '.tmp-' in p.name]
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # model.safetensors like its neighbours


def test_a_flat_image_folder_is_not_evaluated_on_its_own_training_images(tmp_path, run):
    from PIL import Image
    for cls in ('a', 'b'):
        (tmp_path / 'flat' / cls).mkdir(parents=True)
        for i in range(4):
            Image.new('RGB', (8, 8)).save(tmp_path / 'flat' / cls / f'{i}.png')
    proc = run(['train.py', '--dataset', '', '--data-dir', tmp_path / 'flat', *TINY, '--output', tmp_path / 'out'],
               check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # after the folder listing's INFO line
    assert last.startswith('train.py: error: --data-dir ') and "no 'validation' folder beside" in last, last
    assert not (tmp_path / 'out').exists()
