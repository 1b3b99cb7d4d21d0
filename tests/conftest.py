import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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
def one_torch_thread():
    """Torch ops on one thread for the test (exact, repeatable timings of small models), restored after."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def repo_root():
    return ROOT


def kill_when(args, ready: Callable[[], bool], env=None, timeout=300, what='the run'):
    """Start ``python *args`` in its own process group and SIGKILL the whole group (launcher, ranks,
    DataLoader workers) as soon as ``ready()`` is true; fails if the process ends first."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=full_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f'{what} ended before it could be killed'
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

