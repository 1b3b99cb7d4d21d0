"""Training curves (``curves.png``), drawn in a child process so that training never waits on matplotlib.

Importing matplotlib and drawing cost about a second of CPU, several percent of a short run. A
:class:`CurvesProcess` starts ``python -m timm_multilabel.training.curves PNG TITLE`` once the run
holds its folder: the child imports matplotlib while the run starts its workers, then redraws the
PNG (atomically) for each history it reads on its standard input, one JSON line each, until a
``null`` line. The run sends histories with :meth:`CurvesProcess.draw` and waits for the last
drawing in :meth:`CurvesProcess.close`, while it writes its checkpoint and model folder. Should the
child be missing or fail, the run draws in its own process instead; a run killed with ``-9``
leaves the child an end of file (once its DataLoader workers, which hold copies of the pipe, are
gone too), and it exits.

This module imports neither torch nor matplotlib at import time (the child must start light).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..fileio import atomic_path
from ..metric_names import METRIC_TITLES

__all__ = ['CURVE_KEYS', 'plot_curves', 'CurvesProcess']

_logger = logging.getLogger(__name__)

# the metrics plotted as curves (percentages; coverage is in labels per image and has its own scale)
CURVE_KEYS = ('top1', 'real_acc', 'real_f1@0.25', 'real_f1@0.5', 'mAP')
# what a drawing reads of a history row
_ROW_KEYS = ('epoch', 'train_loss', 'eval_loss', *CURVE_KEYS)


def plot_curves(path: Path, rows: List[Dict[str, Any]], title: str = '') -> Optional[Path]:
    """Training loss and evaluation metrics per epoch, as a PNG (None for no rows)."""
    if not rows:
        return None
    # matplotlib's object API, not pyplot: no global figure state, so drawing is safe anywhere
    from matplotlib.figure import Figure

    epochs = [r['epoch'] for r in rows]
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r.get('train_loss') for r in rows], marker='o', label='train loss')
    if any(r.get('eval_loss') is not None for r in rows):
        ax_loss.plot(epochs, [r.get('eval_loss') for r in rows], marker='o', label='eval loss')
    ax_loss.set_xlabel('epoch')
    ax_loss.set_ylabel('loss')
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for key in CURVE_KEYS:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax_metric.plot(epochs, [float('nan') if v is None else v for v in values], marker='o',
                           label=METRIC_TITLES[key])
    ax_metric.set_xlabel('epoch')
    ax_metric.set_ylabel('%')
    ax_metric.legend(fontsize=8)
    ax_metric.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix='.png') as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)


def _plain(value: Any) -> Any:
    """A JSON number (or None) for a history value: tensors and numpy scalars by ``.item()``."""
    if hasattr(value, 'item'):
        value = value.item()
    return value if isinstance(value, (int, float)) or value is None else None


class CurvesProcess:
    """Draws ``path`` from training histories in a child process (see the module docstring).

    Args:
        path: the PNG to write.
        title: the figure's title.
        command: the child's command line (default: this Python, ``-m timm_multilabel.training.curves``).
    """

    def __init__(self, path: Path, title: str = '', command: Optional[Sequence[str]] = None):
        self.path, self.title = Path(path), title
        self.last_rows: Optional[List[Dict[str, Any]]] = None
        command = list(command or [sys.executable, '-m', __name__])
        self.proc: Optional[subprocess.Popen] = None
        try:
            if not command[0]:
                raise OSError('no Python executable (sys.executable is empty)')
            self.proc = subprocess.Popen(
                [*command, str(self.path), title], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                text=True, encoding='utf-8')
        except OSError as e:
            _logger.debug(f'curves process did not start ({e}); drawing in this process')

    def draw(self, rows: List[Dict[str, Any]]) -> None:
        """Redraw the PNG from ``rows`` (history dicts: ``epoch``, ``train_loss``, ``eval_loss``, metrics)."""
        self.last_rows = [{k: _plain(r.get(k)) for k in _ROW_KEYS} for r in rows]
        if self.proc is not None:
            try:
                self.proc.stdin.write(json.dumps(self.last_rows) + '\n')
                self.proc.stdin.flush()
                return
            except (BrokenPipeError, OSError, ValueError):
                self._give_up('it stopped')
        plot_curves(self.path, self.last_rows, self.title)

    def close(self, timeout: float = 120.0) -> None:
        """Wait for the last drawing; draw it here if the child failed."""
        if self.proc is None:
            return
        try:
            # an explicit end: forked DataLoader workers hold copies of the pipe, so closing ours is no EOF
            self.proc.stdin.write('null\n')
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = 'timeout'
        if code != 0:
            self._give_up(f'it ended with {code}')
            if self.last_rows is not None:
                plot_curves(self.path, self.last_rows, self.title)
        self.proc = None

    def _give_up(self, why: str) -> None:
        _logger.warning(f'curves process: {why}; drawing {self.path.name} in the training process')
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _serve(path: str, title: str) -> None:
    """The child: import matplotlib now, then draw each history read from stdin."""
    import matplotlib.figure  # noqa: F401  (most of the cost: paid before the first drawing is asked for)

    for line in sys.stdin:
        rows = json.loads(line)
        if rows is None:  # the run's end
            break
        plot_curves(Path(path), rows, title)


if __name__ == '__main__':
    _serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else '')
