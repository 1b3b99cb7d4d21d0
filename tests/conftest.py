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


# A fresh interpreter reads these at start-up (or its libraries do at import): a run that sets one to a
# value other than this process's starts a fresh interpreter instead of forking the warm one.
_IMPORT_TIME_ENV = ('PYTHONPATH', 'PYTHONHASHSEED', 'HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'HF_HOME',
                    'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_DATASETS_CACHE', 'TOKENIZERS_PARALLELISM', 'CUDA_VISIBLE_DEVICES')


class _ForkServer:
    """tests/forkserver.py, started on first use: train.py and ``-m timm_multilabel.cli`` runs fork an
    interpreter that already imported torch/timm/accelerate/datasets instead of starting Python anew
    (several CPU seconds a run). Each run is still its own process: exit status, stdout/stderr, group."""

    def __init__(self):
        self.proc = None
        self.tmp = None
        self.child_cpu = 0.0  # CPU seconds of the children so far (getrusage of this process does not see them)

    def _start(self):
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix='tml-forkserver-')
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
        self.proc = subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'forkserver.py'), str(ROOT), self.tmp,
                                      str(write_fd)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(write_fd,), env=env, text=True)
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, 'r')
        hello = self._reply(600)
        # a library thread at fork time could leave a lock held in the child: then fresh interpreters only
        self.usable = hello.get('ready') and not hello.get('threads')

    def _reply(self, timeout):
        import json
        import select
        if not select.select([self.replies], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired('forkserver', timeout)
        line = self.replies.readline()
        if not line:
            raise RuntimeError('tests/forkserver.py ended')
        reply = json.loads(line)
        self.child_cpu += reply.get('cpu', 0.0)
        return reply

    def start(self, args, out, err, env):
        """Fork a child running ``python *args``; returns its pid (also its process group)."""
        import json
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        if not self.usable:
            return None
        self.proc.stdin.write(json.dumps({'args': [str(a) for a in args], 'cwd': str(ROOT), 'stdout': str(out),
                                          'stderr': str(err), 'env': env}) + '\n')
        self.proc.stdin.flush()
        return self._reply(60)['pid']

    def wait(self, pid, timeout):
        """The child's exit code (negative: killed by that signal); kills its group after ``timeout`` s."""
        try:
            return self._reply(timeout)['rc']
        except subprocess.TimeoutExpired:
            self.kill(pid)
            raise

    def kill(self, pid):
        """SIGKILL the child's process group (it, its DataLoader workers) and collect its exit code."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended already: its exit code is the reply read next
        return self._reply(60)['rc']

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)
        if self.tmp:
            import shutil
            shutil.rmtree(self.tmp, ignore_errors=True)


_FORK_SERVER = _ForkServer()


@pytest.fixture(scope='session', autouse=True)
def _close_fork_server():
    yield
    _FORK_SERVER.close()


def _forkable(args, cwd, env) -> bool:
    """A ``python *args`` run the warm interpreter can serve exactly like a fresh one."""
    if os.environ.get('TML_FORKSERVER') == '0':  # every run in a fresh interpreter
        return False
    args = [str(a) for a in args]
    entry = args[0] == 'train.py' or args[:2] == ['-m', 'timm_multilabel.cli']
    return (entry and (cwd is None or Path(cwd) == ROOT)
            and all(os.environ.get(k) == v for k, v in (env or {}).items() if k in _IMPORT_TIME_ENV))


def run_script(args, cwd=None, env=None, timeout=600, check=True, fresh=False):
    """Run a Python entry point (train.py, -m module, benchmark) in a subprocess; returns CompletedProcess.

    train.py and ``-m timm_multilabel.cli`` runs fork the warm interpreter of tests/forkserver.py (a
    process of their own, only the imports done beforehand); ``fresh=True`` starts Python anew as a
    user's shell does."""
    full_env = dict(os.environ)
    # one torch thread unless the environment says otherwise: the tests' tiny models gain nothing from
    # two, and on a busy 2-core machine two threads spin (a 1-epoch run: 6-12 s CPU with 2, 2.3-2.8 s with 1)
    full_env.update({'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': full_env.get('OMP_NUM_THREADS', '1')})
    if env:
        full_env.update(env)
    if not fresh and _forkable(args, cwd, env):
        proc = _run_forked(args, full_env, timeout)
        if proc is not None:
            return _checked(args, proc, check)
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    return _checked(args, proc, check)


def _checked(args, proc, check):
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}')
    return proc


def _run_forked(args, full_env, timeout):
    """``python *args`` as a child of the fork server (None where it cannot serve it) with environment
    ``full_env`` (what differs from the server's was checked by _forkable not to matter at import)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / 'out', Path(tmp) / 'err'
        pid = _FORK_SERVER.start(args, out, err, full_env)
        if pid is None:
            return None
        rc = _FORK_SERVER.wait(pid, timeout)
        return subprocess.CompletedProcess([sys.executable, *map(str, args)], rc,
                                           out.read_text(errors='replace'), err.read_text(errors='replace'))


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


def import_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module, found the way ``python benchmarks/NAME.py`` finds its
    ``_bench`` helper (benchmarks/ first on the path while it imports)."""
    import importlib
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / 'benchmarks'))
        return importlib.import_module(name)


def kill_when(args, ready: Callable[[], bool], env=None, timeout=300, what='the run', fresh=False):
    """Start ``python *args`` in its own process group and SIGKILL the whole group (launcher, ranks,
    DataLoader workers) as soon as ``ready()`` is true; fails if the process ends first. train.py and
    ``-m timm_multilabel.cli`` fork the warm interpreter as in run_script unless ``fresh``."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    if not fresh and _forkable(args, None, env):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            pid = _FORK_SERVER.start(args, Path(tmp) / 'out', Path(tmp) / 'err', full_env)
            if pid is not None:
                deadline = time.time() + timeout
                while not ready():
                    if time.time() > deadline:
                        _FORK_SERVER.kill(pid)
                        raise AssertionError(f'{what} was not ready after {timeout} s')
                    try:
                        rc = _FORK_SERVER._reply(0.02)['rc']  # a reply now: the child has ended
                    except subprocess.TimeoutExpired:
                        continue
                    raise AssertionError(f'{what} ended (exit {rc}) before it could be killed')
                _FORK_SERVER.kill(pid)
                return
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=full_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f'{what} ended before it could be killed'
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
