"""What the benchmark scripts share: train.py runs as a user starts them, tables, JSON.

A benchmark is a client of the project: it starts ``python train.py FLAGS --output DIR`` (or
another command line) in a subprocess, reads what the run leaves (``summary.json``, the per-epoch
``summary.csv``) and reports. Nothing here patches or imports train.py.

The scripts import this module as ``_bench``: ``python benchmarks/x.py`` puts ``benchmarks/`` on
``sys.path``; the tests add it the same way.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from timm_multilabel.fileio import write_json
from timm_multilabel.metrics import METRIC_KEYS

__all__ = ['ROOT', 'TRAIN_PY', 'QUIET_RUN', 'METRIC_KEYS', 'TrainRun', 'train_flags', 'subprocess_env', 'run_python',
           'run_train', 'fmt', 'text_table', 'write_json', 'work_folder']

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / 'train.py'

# train.py flags of every benchmark run: data loading in the training process (so its CPU time
# is the run's), no per-batch log lines, one checkpoint kept.
QUIET_RUN: Dict[str, Any] = dict(workers=0, log_interval=1000000, checkpoint_hist=1)


def train_flags(**options: Any) -> List[str]:
    """Command-line flags from keyword arguments, in their order.

    ``img_size=24`` -> ``['--img-size', '24']``; a tuple or list gives several values
    (``scale=(0.5, 1.0)`` -> ``['--scale', '0.5', '1.0']``); ``True`` gives the bare flag.
    """
    flags: List[str] = []
    for name, value in options.items():
        flags.append('--' + name.replace('_', '-'))
        if isinstance(value, (tuple, list)):
            flags += [str(v) for v in value]
        elif value is not True:
            flags.append(str(value))
    return flags


def subprocess_env(threads: int = 1) -> Dict[str, str]:
    """This environment, with ``threads`` torch threads, offline Hugging Face, no progress bars."""
    env = dict(os.environ)
    env.update({'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads), 'HF_HUB_OFFLINE': '1',
                'HF_DATASETS_OFFLINE': '1', 'TQDM_DISABLE': '1', 'PYTHONUNBUFFERED': '1'})
    return env


def run_python(args: Sequence[str], what: str, threads: int = 1, timeout: Optional[float] = None) -> None:
    """``python ARGS`` in the repository root; ``RuntimeError`` with the end of stderr if it fails."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=subprocess_env(threads),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f'{what} exited {proc.returncode}\n{proc.stderr[-4000:]}')


@dataclass
class TrainRun:
    """A finished train.py run: its ``summary.json``, its ``summary.csv`` rows (one per epoch, as
    strings), the wall seconds of the subprocess (``None`` when an earlier run was read again)."""
    out_dir: Path
    summary: Dict[str, Any]
    epochs: List[Dict[str, str]] = field(default_factory=list)
    wall_seconds: Optional[float] = None

    @property
    def reused(self) -> bool:
        return self.wall_seconds is None

    @property
    def metrics(self) -> Dict[str, Any]:
        """The final model's test metrics (``last_metrics``; ``metrics`` are the best epoch's by
        top-1 on the test split, a choice made on the test set)."""
        last = self.summary.get('last_metrics') or self.summary['metrics']
        return {k: last.get(k) for k in METRIC_KEYS}

    def epoch_column(self, key: str) -> List[float]:
        """One number per epoch from ``summary.csv`` (epochs without it are skipped)."""
        return [float(r[key]) for r in self.epochs if r.get(key)]

    @classmethod
    def read(cls, out_dir: Path, wall_seconds: Optional[float] = None) -> 'TrainRun':
        out_dir = Path(out_dir)
        summary = json.loads((out_dir / 'summary.json').read_text())
        epochs: List[Dict[str, str]] = []
        if (out_dir / 'summary.csv').is_file():
            with open(out_dir / 'summary.csv', newline='') as f:
                epochs = list(csv.DictReader(f))
        return cls(out_dir, summary, epochs, wall_seconds)


def finished_run_matches(out_dir: Path, flags: Sequence[str]) -> bool:
    """True when ``out_dir`` holds a finished train.py run (summary.json, summary.csv) whose
    resolved arguments (args.yaml) equal those that ``flags`` resolve to."""
    import yaml
    from timm_multilabel.training.args import parse_args

    if not all((out_dir / f).is_file() for f in ('summary.json', 'args.yaml', 'summary.csv')):
        return False
    expected, _ = parse_args([*flags, '--output', str(out_dir), '--overwrite'])
    saved = yaml.safe_load((out_dir / 'args.yaml').read_text()) or {}
    return all(saved.get(k) == v for k, v in vars(expected).items() if k not in ('output', 'overwrite'))


def run_train(flags: Sequence[str], out_dir: Path, threads: int = 1, timeout: Optional[float] = None,
              reuse: bool = False) -> TrainRun:
    """``python train.py FLAGS --output OUT_DIR --overwrite`` in a subprocess (``threads`` torch
    threads); return the finished run. With ``reuse``, a finished run in ``out_dir`` with the same
    resolved arguments is read instead of trained again."""
    out_dir = Path(out_dir)
    if reuse and finished_run_matches(out_dir, flags):
        return TrainRun.read(out_dir)
    start = time.time()
    run_python([TRAIN_PY, *flags, '--output', out_dir, '--overwrite'], f'train.py {" ".join(flags)}', threads,
               timeout)
    return TrainRun.read(out_dir, wall_seconds=time.time() - start)


def fmt(value: Any, spec: str = '.2f') -> str:
    """``format(value, spec)`` for a number, ``-`` for anything else (``None``, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return '-'
    return format(value, spec)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned text columns under a rule: the first left-aligned, the others right-aligned."""
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]

    def line(row: List[str]) -> str:
        return '  '.join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths))).rstrip()

    return '\n'.join([line(cells[0]), '  '.join('-' * w for w in widths)] + [line(r) for r in cells[1:]])


@contextmanager
def work_folder(runs_dir: Optional[str], prefix: str) -> Iterator[Path]:
    """Where the train.py runs go, for the ``with`` block: ``runs_dir`` (created, kept), else a
    temporary folder, removed when the block ends (also on an error or an interrupt)."""
    if runs_dir:
        folder = Path(runs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
