"""The tests' warm interpreter (tests/forkserver.py) serves a run exactly as a fresh `python` does."""
import os

from conftest import _forkable, run_script


def test_a_forked_run_prints_and_exits_like_a_fresh_interpreter(tmp_path):
    # a refusal after the dataset listing: INFO lines and the one-line error, both on stderr
    (tmp_path / 'flat' / 'a').mkdir(parents=True)
    (tmp_path / 'flat' / 'a' / '0.png').write_bytes(b'')
    argv = ['train.py', '--dataset', '', '--data-dir', tmp_path / 'flat', '--model', 'test_resnet',
            '--workers', '0', '--output', tmp_path / 'out']
    fresh = run_script(argv, check=False, fresh=True)
    forked = run_script(argv, check=False)
    assert fresh.returncode == forked.returncode == 2
    assert forked.stderr == fresh.stderr and forked.stdout == fresh.stdout
    assert forked.stderr.strip().splitlines()[-1].startswith('train.py: error: --data-dir ')
    assert not (tmp_path / 'out').exists()


def test_runs_that_depend_on_start_up_state_get_a_fresh_interpreter():
    assert _forkable(['train.py', '--help'], None, {'OMP_NUM_THREADS': '1'})
    assert _forkable(['-m', 'timm_multilabel.cli', 'annotate'], None, None)
    assert not _forkable(['train.py'], None, {'PYTHONPATH': '/somewhere'})  # read at start-up
    assert not _forkable(['train.py'], '/tmp', None)
    assert not _forkable(['-m', 'accelerate.commands.launch', 'train.py'], None, None)
    assert not _forkable(['benchmarks/mile_digits.py'], None, None)
    assert _forkable(['train.py'], None, {'HF_HUB_OFFLINE': os.environ['HF_HUB_OFFLINE']})
