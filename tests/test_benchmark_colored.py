"""benchmarks/mile_colored_digits.py: the coloured-digit sets are what its docstring says; a quick run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import import_benchmark


@pytest.fixture(scope='module')
def bench():
    return import_benchmark('mile_colored_digits')


@pytest.fixture(scope='module')
def sets(bench):
    return bench.build_sets(7, dict(bench.CONFIG, copies=2))


def _agreement(s, env):
    digits = ~s['blank'] & (s['env'] == env)
    return float((s['colour'][digits] == (s['label'][digits] >= 5)).mean())


def test_colour_label_correlations(bench, sets):
    train, test = sets['train'], sets['test']
    # colour agrees with the label's half 90% / 80% in the two training environments, 10% at test
    assert _agreement(train, 0) == pytest.approx(0.9, abs=0.02)
    assert _agreement(train, 1) == pytest.approx(0.8, abs=0.02)
    assert _agreement(test, 0) == pytest.approx(0.1, abs=0.02)
    assert _agreement(sets['id_test'], 0) == pytest.approx(0.9, abs=0.03)
    assert set(np.unique(train['env'])) == {0, 1} and set(np.unique(test['env'])) == {0}
    # 25% label noise, always to the paired digit of the other half; the shape's half agrees 75%
    for s in (train, test):
        assert s['noisy'].mean() == pytest.approx(0.25, abs=0.03)
        assert np.array_equal(s['label'], np.where(s['noisy'], (s['digit'] + 5) % 10, s['digit']))
    # the spurious feature is the better predictor in training and the worse one at test
    shape_half = (train['digit'] >= 5) == (train['label'] >= 5)
    assert shape_half.mean() < (_agreement(train, 0) + _agreement(train, 1)) / 2
    refs = bench.reference_rows(test, 7)
    assert refs['shape only (invariant)'] == pytest.approx(75, abs=3)
    assert refs['shape pair + colour half (Bayes on train)'] == pytest.approx(10, abs=2)
    # train and test never share a source digit (the package's split)
    assert not set(train['source']) & set(test['source'])


def test_plus_blanks_carry_colour_labels_only(bench, sets):
    plus, train, test = sets['train_plus'], sets['train'], sets['test']
    blank = plus['blank']
    assert blank.mean() == pytest.approx(1 / 3, abs=0.02)
    assert not train['blank'].any() and not test['blank'].any() and not sets['id_test']['blank'].any()
    # one label each: a blank has a colour class (10 green, 11 red) equal to its colour and no digit ...
    assert np.array_equal(plus['label'][blank], 10 + plus['colour'][blank])
    assert (plus['digit'][blank] == -1).all() and (plus['source'][blank] == -1).all()
    assert plus['colour'][blank].mean() == pytest.approx(0.5, abs=0.05)
    # ... a digit image has a digit class, never a colour; the same draws as cmnist where not blank
    assert (plus['label'][~blank] < 10).all() and (test['label'] < 10).all()
    for key in ('label', 'colour', 'digit', 'source'):
        assert np.array_equal(plus[key][~blank], train[key][~blank]), key
    assert _agreement(plus, 0) == pytest.approx(0.9, abs=0.03)


def test_render_colours(bench, sets):
    plus = sets['train_plus']
    blank_i = int(np.flatnonzero(plus['blank'])[0])
    digit_i = int(np.flatnonzero(~plus['blank'])[0])
    for i in (blank_i, digit_i):
        img = bench.render(plus, i, 28)
        assert img.shape == (28, 28, 3) and img.dtype == np.uint8
        ch = 1 if plus['colour'][i] == 0 else 0          # green -> G, red -> R
        assert img[:, :, ch].max() > 0
        assert (img[:, :, [c for c in range(3) if c != ch]] == 0).all()
    assert (bench.render(plus, blank_i, 28)[:, :, 1 if plus['colour'][blank_i] == 0 else 0] == 255).all()
    assert (bench.render(plus, digit_i, 28) == 0).any()   # ink on black


def test_image_folder_classes(bench, tmp_path):
    """Folder names sort into the class indices the generator uses (digits, then green, red)."""
    import timm.data

    s = bench.build_sets(1, bench.QUICK_CONFIG)
    bench.write_image_folder(tmp_path, s['train_plus'], s['test'], 16)
    train = timm.data.create_dataset('', root=str(tmp_path), split='train')
    val = timm.data.create_dataset('', root=str(tmp_path), split='validation')
    assert train.reader.class_to_idx == {name: i for i, name in enumerate(bench.CLASS_NAMES)}
    assert val.reader.class_to_idx == {str(d): d for d in range(10)}
    assert sorted(t for _, t in train.reader.samples) == sorted(s['train_plus']['label'].tolist())


@pytest.mark.slow
def test_quick_end_to_end(run, tmp_path):
    out = tmp_path / 'colored.json'
    proc = run(['benchmarks/mile_colored_digits.py', '--quick', '--seed', '0', '--json', out,
                '--runs-dir', tmp_path / 'runs'], timeout=900)
    result = json.loads(out.read_text())
    seed = result['per_seed']['0']
    for variant, classes in (('cmnist', 10), ('cmnist_plus', 12)):
        updates = {seed[variant][m]['num_updates'] for m in ('softmax', 'sigmoid', 'mile')}
        assert len(updates) == 1 and updates.pop() > 0, variant   # the same number of updates for all
        assert seed[variant]['num_classes'] == classes
        for method in ('softmax', 'sigmoid', 'mile'):
            row = seed[variant][method]
            # train.py's top-1 equals the one recomputed here from the final weights
            assert row['top1'] == pytest.approx(row['top1_recomputed'], abs=1e-6), (variant, method)
            for key in ('top1', 'top1_clean', 'follows_colour', 'id_top1'):
                assert 0 <= row[key] <= 100
        assert seed[variant]['mile']['mile']  # MILe's state was recorded
    assert 'OOD top-1' in proc.stdout
    summary = run(['benchmarks/mile_colored_digits.py', '--summarize', out])
    assert 'CMNIST+ mile' in summary.stdout
