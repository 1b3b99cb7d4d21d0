"""benchmarks/vs_timm.py: its image folder, what it reads from each script's run folder, its table and
JSON on fake runs (no real timm or train.py run)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import import_benchmark


@pytest.fixture(scope='module')
def bench():
    return import_benchmark('vs_timm')


def _run(seed, timm_top1, our_top1, timm_wall, our_wall, timm_cpu, our_cpu, diff=None):
    return {'seed': seed, 'timm': {'top1': timm_top1, 'wall_seconds': timm_wall, 'cpu_seconds': timm_cpu,
                                   'load_before': 1.0},
            'ours': {'top1': our_top1, 'wall_seconds': our_wall, 'cpu_seconds': our_cpu, 'load_before': 1.0},
            'wall_ratio': our_wall / timm_wall, 'cpu_ratio': our_cpu / timm_cpu, 'flag_differences': diff or {}}


RUNS = [_run(0, 80.0, 82.0, 10.0, 11.0, 20.0, 21.0),
        _run(1, 84.0, 83.0, 20.0, 20.0, 40.0, 40.0),
        _run(2, 88.0, 84.0, 30.0, 30.0, 60.0, 66.0, diff={'smoothing': [0.1, 0.0]})]


def test_summary_means_stds_ratios_and_verdicts(bench):
    s = bench.summarize(RUNS)
    assert s['timm']['top1_mean'] == pytest.approx(84.0) and s['timm']['top1_std'] == pytest.approx(4.0)
    assert s['ours']['top1_mean'] == pytest.approx(83.0) and s['ours']['top1_std'] == pytest.approx(1.0)
    assert s['top1_difference'] == pytest.approx(-1.0) and s['seed_spread'] == pytest.approx(4.0)
    assert s['top1_ok']  # 1 point lower, within the spread of 4
    assert s['wall_ratio_median'] == pytest.approx(1.0)  # per seed 1.1, 1.0, 1.0
    assert s['wall_ratio_of_means'] == pytest.approx(61 / 60)
    assert s['cpu_ratio_median'] == pytest.approx(1.05)  # per seed 1.05, 1.0, 1.1
    assert s['cpu_ratio_of_means'] == pytest.approx(127 / 120)
    assert s['wall_ok'] and s['flag_differences'] == ['smoothing']
    # 5 points lower with a spread of 1: lower beyond the spread; 1.2x slower on every seed: target missed
    low = [_run(i, 90.0 + i, 85.0 + i, 10.0, 12.0, 10.0, 12.0) for i in range(3)]
    s = bench.summarize(low)
    assert s['seed_spread'] == pytest.approx(1.0) and not s['top1_ok'] and not s['wall_ok']
    assert s['wall_ratio_median'] == pytest.approx(1.2)


def test_table_shows_each_seed_and_the_verdicts(bench):
    text = bench.format_table(RUNS, bench.summarize(RUNS))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ['seed', 'timm', 'top-1']
    seed2 = next(line for line in lines if line.startswith('2 '))
    assert seed2.split()[:6] == ['2', '88.00', '84.00', '30.0', '30.0', '1.00']
    assert '84.00 +- 4.00' in text and '83.00 +- 1.00' in text
    assert 'ours - timm = -1.00 points' in text and 'not lower beyond the spread' in text
    assert 'wall 1.00' in text and 'CPU 1.05' in text and 'met' in text
    assert 'resolved differently in the two args.yaml: smoothing' in text


def test_top1_is_the_last_epoch_of_each_script(bench, tmp_path):
    timm_dir, our_dir = tmp_path / 'timm', tmp_path / 'ours'
    timm_dir.mkdir(), our_dir.mkdir()
    # timm's summary.csv: one row an epoch; the best epoch is not the last
    (timm_dir / 'summary.csv').write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n'
                                          '0,2.0,1.5,61.5,90.0,0.001\n1,1.5,1.4,70.25,95.0,0.0005\n'
                                          '2,1.2,1.45,68.0,96.0,0.0\n')
    assert bench.timm_top1(timm_dir) == 68.0
    (our_dir / 'summary.json').write_text(json.dumps({'metrics': {'top1': 71.0}, 'last_metrics': {'top1': 69.5},
                                                      'train_seconds': 12.5}))
    assert bench.our_top1(our_dir) == (69.5, 12.5)
    (timm_dir / 'summary.csv').write_text('epoch,train_loss\n')
    with pytest.raises(RuntimeError, match='eval_top1'):
        bench.timm_top1(timm_dir)


def test_flag_differences_leave_output_folders_out(bench):
    timm_args = {'model': 'resnet10t', 'lr': 0.002, 'output': '/r', 'experiment': 'timm-seed0', 'data': '/d',
                 'data_dir': None, 'smoothing': 0.1, 'pin_mem': False}
    ours = {'model': 'resnet10t', 'lr': 0.002, 'output': '/r/ours-seed0', 'experiment': '', 'data_dir': '/d',
            'smoothing': 0.1, 'mile': False}
    assert bench.flag_differences(timm_args, ours) == {}
    assert bench.flag_differences({**timm_args, 'lr': 0.004}, {**ours, 'data_dir': '/e'}) == {
        'lr': [0.004, 0.002], 'data_dir': ['/d', '/e']}


def test_timed_run_counts_the_cpu_of_the_process_and_its_children(bench, tmp_path):
    # the child burns ~0.3 s of CPU in a grandchild, as train.py's data-loader workers do
    burn = 'import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass'
    code = f'import subprocess, sys; subprocess.run([sys.executable, "-c", {burn!r}]); print("done")'
    times = bench.timed_run([sys.executable, '-c', code], tmp_path / 'log.txt', bench.bench_env(1))
    assert times['cpu_seconds'] >= 0.3 and times['wall_seconds'] >= 0.3
    assert (tmp_path / 'log.txt').read_text().strip() == 'done'
    with pytest.raises(RuntimeError, match='exited 3'):
        bench.timed_run([sys.executable, '-c', 'import sys; sys.exit(3)'], tmp_path / 'log.txt', bench.bench_env(1))


def test_image_folder_is_timms_layout_of_the_digits(bench, tmp_path):
    from timm.data import ImageDataset

    from timm_multilabel.data.digits_grid import load_source_digits

    counts = bench.build_image_folder(tmp_path / 'd', image_px=16, per_class=2)
    assert counts == {'train': 20, 'validation': 20}
    # timm's train.py does not count a folder's classes (a 1000-way head without --num-classes)
    assert bench.SETTING['num_classes'] == bench.QUICK_SETTING['num_classes'] == 10
    train = ImageDataset(str(tmp_path / 'd' / 'train'))
    assert len(train) == 20 and sorted(set(train.reader.class_to_idx)) == [str(c) for c in range(10)]
    path = sorted((tmp_path / 'd' / 'validation' / '7').iterdir())[0]
    img = np.asarray(Image.open(path))
    images, targets = load_source_digits()
    digit = images[int(path.stem)]
    assert targets[int(path.stem)] == 7 and img.shape == (16, 16, 3)
    assert np.array_equal(img[::2, ::2, 0], np.round(digit * (255 / 16)).astype(np.uint8))  # 2x nearest upscale
    assert np.array_equal(img[1::2, 1::2, 2], img[::2, ::2, 0])
    assert bench.build_image_folder(tmp_path / 'd', image_px=16, per_class=2) == counts  # kept, not rebuilt


def test_command_line_refusals_and_summarize(bench, tmp_path, capsys):
    assert bench.main([]) == 2
    assert '--timm-train PATH' in capsys.readouterr().err
    assert bench.main(['--timm-train', str(tmp_path / 'nope.py')]) == 2
    assert 'no such file' in capsys.readouterr().err
    recorded = tmp_path / 'r.json'
    recorded.write_text(json.dumps({'runs': RUNS, 'summary': bench.summarize(RUNS)}))
    assert bench.main(['--summarize', str(recorded)]) == 0
    assert '83.00 +- 1.00' in capsys.readouterr().out
