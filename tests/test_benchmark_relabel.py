"""benchmarks/relabel_digits.py: row flags, the report, and a --quick smoke run writing the JSON rows."""
import json
from pathlib import Path

import pytest
from conftest import import_benchmark

from timm_multilabel.metrics import METRIC_KEYS


def test_rows_select_maps_mode_and_cutmix():
    b = import_benchmark('relabel_digits')
    assert set(b.ROWS) == {
        'baseline', 'relabel', 'relabel-local-hard', 'relabel-global', 'relabel-global-hard', 'relabel-oracle',
        'baseline+cutmix', 'relabel+cutmix', 'relabel-local-hard+cutmix', 'relabel-global+cutmix',
        'relabel-global-hard+cutmix', 'relabel-oracle+cutmix'}
    maps = {'machine': Path('/m'), 'oracle': Path('/o')}
    assert b.row_flags('baseline', b.CONFIG, maps) == []
    assert b.row_flags('relabel-global-hard', b.CONFIG, maps) == ['--relabel-maps', '/m', '--relabel-mode', 'global-hard']
    assert b.row_flags('relabel-oracle+cutmix', b.CONFIG, maps) == [
        '--relabel-maps', '/o', '--relabel-mode', 'local', '--cutmix', '1.0', '--mixup', '0']
    flags = b.common_flags(b.CONFIG, 7)
    assert flags[flags.index('--seed') + 1] == '7' and flags[flags.index('--dataset') + 1] == 'digits-main'
    assert flags[flags.index('--crop-pct') + 1] == '1.0'  # the whole canvas is evaluated
    with pytest.raises(Exception, match='unknown row'):
        b.row_flags('relabel+mixup', b.CONFIG, maps)


def test_target_and_table():
    b = import_benchmark('relabel_digits')
    row = {k: 50.0 for k in METRIC_KEYS}
    result = {'seed': 1, 'baseline': dict(row, train_seconds=1.0),
              'relabel': dict(row, top1=51.5, mAP=50.0, train_seconds=1.0)}
    t = b.targets(result)
    assert t['met'] and t['top1_gain'] == pytest.approx(1.5) and t['mAP_gain'] == 0.0
    result['relabel']['mAP'] = 49.9
    assert not b.targets(result)['met']
    result['targets'] = b.targets(result)
    table = b.format_table(result)
    assert 'relabel' in table and '+1.50 top-1 vs baseline' in table and 'NOT met' in table


def test_summary_over_seeds_is_paired(tmp_path, run):
    b = import_benchmark('relabel_digits')
    runs = []
    for seed, (base, rel) in enumerate([(90.0, 92.0), (94.0, 95.0)], start=1):
        row = {k: 50.0 for k in METRIC_KEYS}
        runs.append({'seed': seed, 'baseline': dict(row, top1=base), 'relabel': dict(row, top1=rel, mAP=53.0)})
    s = b.summarize(runs)
    assert s['seeds'] == [1, 2] and s['relabel']['n'] == 2
    assert s['relabel']['top1'] == pytest.approx((93.5, 2.1213203))
    assert s['relabel']['d_top1'] == pytest.approx((1.5, 0.7071068))  # paired: (2, 1)
    assert s['relabel']['d_mAP'] == pytest.approx((3.0, 0.0))
    assert 'relabel-oracle' not in s
    md = b.format_summary_markdown(s).splitlines()
    assert md[0].startswith('| row (seeds 1, 2) |') and len(md) == 4  # header, rule, baseline, relabel
    assert md[3] == '| relabel | 93.50 +- 2.12 | +1.50 +- 0.71 | 53.00 +- 0.00 | +3.00 +- 0.00 | 92.00 / 95.00 | 78.9 |'
    files = []
    for r in runs:
        files.append(tmp_path / f"s{r['seed']}.json")
        files[-1].write_text(json.dumps(r))
    assert b.main(['--summarize', *map(str, files), '--json', str(tmp_path / 'sum.json')]) == 0
    assert json.loads((tmp_path / 'sum.json').read_text())['relabel']['d_top1'][0] == pytest.approx(1.5)


@pytest.mark.slow
def test_quick_run_writes_the_json_rows(tmp_path, run):
    out = tmp_path / 'r.json'
    rows = ['baseline', 'relabel', 'relabel-global-hard+cutmix', 'relabel-oracle']
    proc = run(['benchmarks/relabel_digits.py', '--quick', '--seed', '2', '--json', out, '--rows', ','.join(rows),
                '--out-dir', tmp_path / 'work'], timeout=900)
    result = json.loads(out.read_text())
    assert result['quick'] is True and result['seed'] == 2
    for row in rows:
        assert 0.0 <= result[row]['top1'] <= 100.0 and 0.0 <= result[row]['mAP'] <= 100.0
    assert result['relabel']['method'] == 'relabel' and result['baseline']['method'] == 'baseline'
    for which in ('machine', 'oracle'):
        assert 0.0 <= result['maps'][which]['whole_argmax_main'] <= 100.0
    assert result['maps']['oracle']['cell_top1'] == 100.0  # the oracle is right by construction
    assert 'targets' in result and 'relabel' in proc.stdout
    assert (tmp_path / 'work' / 'maps-machine' / 'README.md').is_file()
