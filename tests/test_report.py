"""What a run leaves for people, without train.py: the per-epoch CSV, the results table, summary.json
and the training-curve PNG (timm_multilabel/training/report.py)."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_multilabel import metrics
from timm_multilabel.fileio import FILE_MODE
from timm_multilabel.training import report
from timm_multilabel.training.report import (
    METRIC_KEYS, METRIC_TITLES, plot_curves, results_table, write_epoch_log, write_json)


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_metric_facts_have_one_home():
    assert report.METRIC_KEYS is metrics.METRIC_KEYS and METRIC_TITLES is metrics.METRIC_TITLES
    assert set(METRIC_TITLES) == set(METRIC_KEYS) == set(metrics.METRIC_NAMES)


def test_epoch_log_rows_fields_and_nan(tmp_path):
    path = tmp_path / 'summary.csv'
    rows = [
        {'epoch': 0, 'train_loss': 2.5, 'top1': float('nan')},
        {'epoch': 1, 'train_loss': 1.0 / 3.0, 'top1': 50.0, 'lr': 0.01, 'mAP': None},
    ]
    write_epoch_log(path, rows)
    lines = path.read_text().splitlines()
    assert lines[0] == 'epoch,train_loss,top1,lr,mAP'  # fields in the order first seen
    got = _read_csv(path)
    assert got == [
        {'epoch': '0', 'train_loss': '2.5', 'top1': '', 'lr': '', 'mAP': ''},
        {'epoch': '1', 'train_loss': '0.3333333333', 'top1': '50', 'lr': '0.01', 'mAP': ''},
    ]
    assert path.stat().st_mode & 0o777 == FILE_MODE
    assert sorted(p.name for p in tmp_path.iterdir()) == ['summary.csv']


def test_epoch_log_is_rewritten_after_a_resume(tmp_path):
    path = tmp_path / 'summary.csv'
    write_epoch_log(path, [{'epoch': e, 'train_loss': 1.0 + e} for e in range(3)])
    # resumed from the epoch-0 checkpoint: epochs 1 and 2 are trained again, with other numbers
    write_epoch_log(path, [{'epoch': 0, 'train_loss': 1.0}, {'epoch': 1, 'train_loss': 9.0}])
    assert _read_csv(path) == [{'epoch': '0', 'train_loss': '1'}, {'epoch': '1', 'train_loss': '9'}]
    write_epoch_log(path, [])  # nothing to write leaves the file alone
    assert len(_read_csv(path)) == 2


def test_results_table_text():
    table = results_table({'top1': 71.256, 'real_acc': None, 'real_f1@0.25': 55.0, 'mAP': 66},
                          extra={'epochs': 3, 'seconds': 12.345})
    width = max(len(t) for t in METRIC_TITLES.values())
    assert table.splitlines() == [
        f'{"metric":<{width}}  value',
        f'{"-" * width}  ------',
        f'{"top-1 (%)":<{width}}  71.26',
        f'{"ReaL acc (%)":<{width}}  n/a',
        f'{"ReaL-F1@0.25 (%)":<{width}}  55.00',
        f'{"ReaL-F1@0.5 (%)":<{width}}  n/a',
        f'{"coverage@0.25":<{width}}  n/a',
        f'{"mAP (%)":<{width}}  66',
        f'{"epochs":<{width}}  3',
        f'{"seconds":<{width}}  12.35',
    ]


def test_write_json_of_numpy_and_torch_scalars(tmp_path):
    path = tmp_path / 'summary.json'
    write_json(path, {
        'np_float': np.float32(0.5), 'np_int': np.int64(7), 'torch_float': torch.tensor(1.25),
        'torch_int': torch.tensor(3), 'tuple': (1, 2), 'path': Path('/a/b'), 'nested': {'x': [np.float64(2.0)]},
        'nan': float('nan'),
    })
    text = path.read_text()
    assert text.endswith('\n')
    data = json.loads(text)
    assert data['np_float'] == 0.5 and data['np_int'] == 7 and isinstance(data['np_int'], int)
    assert data['torch_float'] == 1.25 and data['torch_int'] == 3 and isinstance(data['torch_int'], int)
    assert data['tuple'] == [1, 2] and data['path'] == '/a/b' and data['nested'] == {'x': [2.0]}
    assert math.isnan(data['nan'])
    assert list(data) == ['np_float', 'np_int', 'torch_float', 'torch_int', 'tuple', 'path', 'nested', 'nan']
    assert path.stat().st_mode & 0o777 == FILE_MODE


def test_plot_curves_writes_a_png(tmp_path):
    pytest.importorskip('matplotlib')
    path = tmp_path / 'curves.png'
    rows = [{'epoch': e, 'train_loss': 2.0 / (e + 1), 'eval_loss': 1.5 / (e + 1), 'top1': 10.0 * e,
             'real_acc': None if e == 0 else 20.0 * e, 'mAP': None} for e in range(3)]
    assert plot_curves(path, rows, title='run') == path
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert path.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ['curves.png']
    assert plot_curves(tmp_path / 'none.png', []) is None
    assert not (tmp_path / 'none.png').exists()
