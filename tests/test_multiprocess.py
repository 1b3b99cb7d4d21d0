"""train.py under `accelerate launch` with 2 CPU processes (gloo): sharded training, exact evaluation."""
import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def accelerate_launch(run, args, num_processes=2):
    return run(['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(num_processes),
                '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port',
                '29517', *args], env={'OMP_NUM_THREADS': '1'})


def test_two_processes_count_every_test_sample_once(tmp_path, run):
    out = tmp_path / 'out'
    # 101 test samples: not a multiple of 2 processes x batch 16, so Accelerate pads the last batch
    # and gather_for_metrics must drop the duplicates again.
    proc = accelerate_launch(run, ['train.py', '--model', 'test_resnet', '--train-num-samples', '200',
                                   '--val-num-samples', '101', '-b', '16', '--workers', '0', '--epochs', '2',
                                   '--mile', '--mile-kt', '2', '--mile-ks', '1', '--output', out])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['world_size'] == 2
    assert summary['eval_samples'] == summary['test_size'] == 101
    # Each rank sees half of every epoch: 200 samples / (2 ranks x 16) = 6 full batches per rank.
    assert summary['num_updates'] == 2 * (200 // (2 * 16))
    # MILe's schedule advanced once per update on every rank: 12 updates = 4 cycles of kt+ks=3.
    assert {k: summary['mile'][k] for k in ('generation', 'phase')} == {'generation': 4, 'phase': 'teacher'}
    assert 0 <= summary['mile']['labels_per_image'] <= 10  # the teacher's, last student phase (this rank's)
    assert proc.stdout.count('output:') == 1  # only the main process prints the results


def test_annotate_under_two_processes_writes_one_dataset(tmp_path, run):
    import timm
    import torch

    from timm_multilabel.data import DigitsGrid
    from timm_multilabel.relabel.store import load_label_maps

    images = tmp_path / 'images'
    DigitsGrid('train', num_samples=50, seed=1).export_image_folder(images)
    weights = tmp_path / 'w.pth'
    torch.manual_seed(0)
    torch.save(timm.create_model('test_resnet', num_classes=10).state_dict(), weights)
    common = ['-m', 'timm_multilabel.cli', 'annotate', '--model', 'test_resnet', '--pretrained-path', weights,
              '--data-dir', images, '--img-size', '48', '--topk', '3', '--shard-size', '8', '--batch-size', '4',
              '--workers', '0']
    accelerate_launch(run, [*common, '--output', tmp_path / 'two'])
    run([*common, '--output', tmp_path / 'one'])
    two = load_label_maps(str(tmp_path / 'two'), cache_dir=str(tmp_path / 'c2'))
    one = load_label_maps(str(tmp_path / 'one'), cache_dir=str(tmp_path / 'c1'))
    assert len(two) == 50 and two.image_ids == one.image_ids  # each image exactly once
    s2, c2 = two.get_batch(one.image_ids)
    s1, c1 = one.get_batch(one.image_ids)
    assert torch.equal(c1, c2) and torch.allclose(s1, s2, atol=1e-3)


def test_two_processes_resume_mid_epoch_exactly(tmp_path, run):
    import torch

    from conftest import kill_when
    flags = ['train.py', '--model', 'test_resnet', '--train-num-samples', '200', '--val-num-samples', '64',
             '-b', '16', '--workers', '0', '--epochs', '2', '--mixup', '0.2', '--checkpoint-every', '2']
    full, part = tmp_path / 'full', tmp_path / 'part'
    accelerate_launch(run, [*flags, '--output', full])
    # start the same run, kill the whole launch (both ranks) at its first mid-epoch checkpoint
    kill_when(['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
               '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29518', *flags,
               '--output', part], lambda: (part / 'last.pth.tar').exists(), env={'OMP_NUM_THREADS': '1'})
    ckpt = torch.load(part / 'last.pth.tar', weights_only=True)
    assert ckpt['epoch_progress']['batches'] in (2, 4) and len(ckpt['rng']) == 2  # one RNG state per rank
    accelerate_launch(run, [*flags, '--output', part, '--resume', part])
    a = json.loads((full / 'summary.json').read_text())
    b = json.loads((part / 'summary.json').read_text())
    assert a['metrics'] == b['metrics'] and a['num_updates'] == b['num_updates'] == 2 * (200 // 32)
    wa = torch.load(full / 'last.pth.tar', weights_only=True)['state_dict']
    wb = torch.load(part / 'last.pth.tar', weights_only=True)['state_dict']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
