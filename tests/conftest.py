import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Offline and deterministic for every test and every subprocess a test starts.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def run_script(args, cwd=None, env=None, timeout=600, check=True):
    """Run a Python entry point (train.py, -m module, benchmark) in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update({'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': full_env.get('OMP_NUM_THREADS', '2')})
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}')
    return proc


@pytest.fixture
def run():
    return run_script


@pytest.fixture
def repo_root():
    return ROOT
