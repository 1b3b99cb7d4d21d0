"""benchmarks/mile_digits.py: JSON structure and self-consistency on tiny settings (not quality)."""
from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import import_benchmark

from timm_multilabel.metrics import METRIC_KEYS

NUM_CLASSES = 10


@pytest.mark.slow
def test_quick_json_is_consistent(run, tmp_path):
    out = tmp_path / 'mile.json'
    runs = tmp_path / 'runs'
    proc = run(['benchmarks/mile_digits.py', '--quick', '--seed', '3', '--json', out, '--runs-dir', runs], timeout=900)
    result = json.loads(out.read_text())

    assert {'softmax', 'sigmoid', 'mile', 'overhead', 'overhead_wall', 'overhead_wall_min_epoch', 'config', 'reference',
            'targets'} <= set(result)
    cfg = result['config']
    assert cfg['quick'] is True and cfg['seed'] == 3
    updates = cfg['epochs'] * (cfg['train_num_samples'] // cfg['batch_size'])
    for method in ('softmax', 'sigmoid', 'mile', 'mile-separate'):
        row = result[method]
        assert set(METRIC_KEYS) | {'train_seconds'} <= set(row), method
        for key in ('top1', 'real_acc', 'real_f1@0.25', 'real_f1@0.5', 'mAP'):
            assert 0.0 <= row[key] <= 100.0, (method, key, row[key])
        assert 1.0 <= row['label_coverage@0.25'] <= NUM_CLASSES
        assert row['num_updates'] == updates, method  # same number of optimizer updates for all four
        assert row['eval_samples'] == cfg['val_num_samples']
        assert len(row['epoch_seconds']) == cfg['epochs']
        assert row['train_seconds'] == pytest.approx(sum(row['epoch_seconds']), rel=1e-3, abs=1e-3)
        assert row['epoch_seconds_min'] == pytest.approx(min(row['epoch_seconds']))
        assert row['train_seconds'] > 0
        # the final model's metrics: train.py's last epoch row, and equal to the F1 recomputed from last.pth.tar
        with open(runs / method / 'summary.csv', newline='') as f:
            last = list(csv.DictReader(f))[-1]
        for key in METRIC_KEYS:
            assert row[key] == pytest.approx(float(last[key]), abs=1e-6), (method, key)
        assert row['thresholds']['f1_recomputed_diff'] < 1e-6, method
        assert row['thresholds']['0.25']['real_f1'] == pytest.approx(row['real_f1@0.25'])
        assert row['thresholds']['0.25']['coverage'] == pytest.approx(row['label_coverage@0.25'])
        coverages = [row['thresholds'][f'{t:g}']['coverage'] for t in (0.05, 0.1, 0.25, 0.5)]
        assert coverages == sorted(coverages, reverse=True)  # lower threshold, more labels
        assert len(row['epoch_cpu_seconds']) == cfg['epochs'] and min(row['epoch_cpu_seconds']) > 0
        assert row['train_cpu_seconds'] == pytest.approx(sum(row['epoch_cpu_seconds']), rel=1e-3, abs=1e-3)

    # overhead: ratio of the two runs' training seconds (CPU; wall totals and fastest epochs for reference)
    assert result['overhead'] == pytest.approx(
        result['mile']['train_cpu_seconds'] / result['sigmoid']['train_cpu_seconds'])
    assert result['overhead_wall'] == pytest.approx(
        result['mile']['train_seconds'] / result['sigmoid']['train_seconds'])
    assert result['overhead_wall_min_epoch'] == pytest.approx(
        result['mile']['epoch_seconds_min'] / result['sigmoid']['epoch_seconds_min'])

    # interleaved cross-check: a student update adds the teacher's forward to a BCE update
    inter = result['overhead_interleaved']
    assert inter['pairs'] >= 5 and inter['student_step_ratio'] > 1.0
    kt, ks = cfg['kt'], cfg['ks']
    assert inter['overhead'] == pytest.approx((kt + ks * inter['student_step_ratio']) / (kt + ks))

    # MILe schedule after `updates` updates of kt + ks cycles (hand count: 16 updates, 4 + 4 -> generation 2)
    kt, ks = cfg['kt'], cfg['ks']
    assert result['mile']['mile']['generation'] == updates // (kt + ks)
    assert result['mile']['mile']['phase'] == ('teacher' if updates % (kt + ks) < kt else 'student')

    targets = result['targets']
    assert targets['f1_gain_vs_sigmoid'] == pytest.approx(
        result['mile']['real_f1@0.25'] - result['sigmoid']['real_f1@0.25'])
    assert targets['f1_gain_vs_softmax'] == pytest.approx(
        result['mile']['real_f1@0.25'] - result['softmax']['real_f1@0.25'])
    assert targets['met'] == (min(targets['f1_gain_vs_sigmoid'], targets['f1_gain_vs_softmax']) >= 10.0
                              and result['overhead'] <= 1.25)

    refs = result['reference']
    m = refs['true_labels_per_image']
    assert 1.0 <= m <= NUM_CLASSES
    assert refs['all_classes']['label_coverage@0.25'] == pytest.approx(NUM_CLASSES)
    # per-image F1 of predicting all classes is 2n/(n + 10), concave in n: its mean <= f(mean n)
    assert 0.0 < refs['all_classes']['real_f1@0.25'] <= 100.0 * 2 * m / (m + NUM_CLASSES) + 1e-6
    assert refs['center_digit']['label_coverage@0.25'] == pytest.approx(1.0)
    assert refs['center_digit']['real_f1@0.25'] == pytest.approx(refs['center_digit']['real_f1@0.5'])
    # one correct label out of n: 2/(1 + n), convex in n: its mean >= f(mean n)
    assert refs['center_digit']['real_f1@0.25'] >= 100.0 * 2 / (1 + m) - 1e-6

    assert result['paper']['mile'] == {'real_f1@0.25': 41.35, 'real_f1@0.5': 34.32}
    flags = result['config']['train_py_flags']
    assert flags['mile-separate'] == flags['mile'] + ['--mile-student', 'separate']
    assert '41.35' in proc.stdout and 'overhead' in proc.stdout
    assert all(math.isfinite(result[k]) for k in ('overhead', 'overhead_wall', 'overhead_wall_min_epoch'))

    # --reuse reads the finished runs instead of training again: same rows
    again = tmp_path / 'again.json'
    run(['benchmarks/mile_digits.py', '--quick', '--seed', '3', '--json', again, '--runs-dir', runs, '--reuse'])
    second = json.loads(again.read_text())
    for method in ('softmax', 'sigmoid', 'mile', 'mile-separate'):
        assert second[method]['reused'] is True
        assert {k: second[method][k] for k in METRIC_KEYS} == {k: result[method][k] for k in METRIC_KEYS}
        assert second[method]['train_cpu_seconds'] == result[method]['train_cpu_seconds']


def test_bad_arguments_exit_2_before_any_work(tmp_path, capsys):
    bench = import_benchmark('mile_digits')
    assert bench.main(['--threads', '0']) == 2
    assert '--threads 0' in capsys.readouterr().err
    missing = tmp_path / 'no' / 'such' / 'dir' / 'x.json'
    assert bench.main(['--json', str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'does not exist' in err
    assert not missing.parent.exists()
    assert bench.main(['--reuse']) == 2
    assert '--runs-dir' in capsys.readouterr().err


def test_train_flags_differ_only_in_method():
    bench = import_benchmark('mile_digits')
    cfg = bench.CONFIG
    base = bench.common_flags(cfg, seed=5)
    assert base[base.index('--seed') + 1] == '5'
    assert bench.method_flags('softmax', cfg) == []
    head = ['--head-init-bias', str(cfg['head_init_bias'])]
    assert cfg['head_init_bias'] == pytest.approx(-math.log(NUM_CLASSES), abs=1e-6)  # the official MILe init
    # sigmoid: MILe's teacher-phase loss (Eq. 1, summed over classes) and init, like for like
    assert bench.method_flags('sigmoid', cfg) == ['--bce-loss', '--bce-sum'] + head
    assert bench.method_flags('mile', cfg) == [
        '--mile', '--mile-kt', str(cfg['kt']), '--mile-ks', str(cfg['ks']), '--mile-rho', str(cfg['rho'])] + head
    # every MILe cycle ends on an epoch boundary (same teacher/student mix in every epoch)
    assert (cfg['train_num_samples'] // cfg['batch_size']) % (cfg['kt'] + cfg['ks']) == 0


def test_plot_sweep_writes_pngs(tmp_path):
    bench = import_benchmark('mile_digits')
    sweep = {
        'kt_ks': {'kt': [10, 20], 'ks': [5, 10, 20], 'rho': 0.1,
                  'real_f1@0.25': [[40.0, 75.0, 50.0], [30.0, 35.0, 45.0]],
                  'label_coverage@0.25': [[2.5, 10.0, 3.0], [1.1, 1.4, 2.0]],
                  'top1': [[50.0, 20.0, 40.0], [55.0, 54.0, 50.0]]},
        'rho': {'rho': [0.05, 0.1, 0.25], 'kt': 10, 'ks': 5, 'real_f1@0.25': [70.0, 45.0, 29.0],
                'real_f1@0.5': [24.0, 26.0, 27.0], 'top1': [30.0, 48.0, 56.0],
                'label_coverage@0.25': [7.7, 2.9, 1.1]},
    }
    paths = bench.plot_sweep(sweep, tmp_path, {'softmax': 28.7, 'sigmoid': 28.6}, true_labels=6.1)
    assert [p.name for p in paths] == ['mile_kt_ks.png', 'mile_rho.png']
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
    assert sorted(x.name for x in tmp_path.iterdir()) == ['mile_kt_ks.png', 'mile_rho.png']  # no temp files left
