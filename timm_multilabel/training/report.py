"""What a run leaves for people: the per-epoch CSV, training curves, summary.json, a table."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..fileio import atomic_path, atomic_write_text, write_json
from ..metric_names import METRIC_KEYS, METRIC_TITLES
from .curves import plot_curves

__all__ = [
    'METRIC_KEYS', 'METRIC_TITLES', 'atomic_write_text', 'write_json', 'write_epoch_log', 'plot_curves',
    'results_table', 'collapse_warnings',  # plot_curves: from .curves
]

# labels per image at or above this fraction of the class count: "every class", a collapsed model
COLLAPSE_FRACTION = 0.8


def write_epoch_log(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Rewrite the per-epoch CSV (one row an epoch; rewriting keeps it right after a resume)."""
    if not rows:
        return
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in fields})


def _fmt(v):
    if isinstance(v, float):
        return '' if math.isnan(v) else f'{v:.10g}'
    return '' if v is None else v


def results_table(metrics: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> str:
    """A two-column text table of the final metrics."""
    rows = [(METRIC_TITLES[k], metrics.get(k)) for k in METRIC_KEYS]
    rows += list((extra or {}).items())
    width = max(len(name) for name, _ in rows)
    lines = [f'{"metric":<{width}}  value', f'{"-" * width}  ------']
    for name, value in rows:
        if value is None:
            text = 'n/a'
        elif isinstance(value, float):
            text = f'{value:.2f}'
        else:
            text = str(value)
        lines.append(f'{name:<{width}}  {text}')
    return '\n'.join(lines)


def collapse_warnings(eval_metrics: Dict[str, Any], task_state: Dict[str, Any], task_name: str,
                      num_classes: int, probs_kind: str) -> List[str]:
    """One line for each sign that the model marks nearly every class present: a sigmoid model's
    predicted labels per image (``label_coverage@0.25``, where the data has ReaL labels) or the
    task's ``labels_per_image`` (MILe: the teacher's pseudo-labels) at or above
    ``COLLAPSE_FRACTION`` of the class count."""
    if num_classes < 3:
        return []
    signs = [(f'{task_name} labels per image', task_state.get('labels_per_image'))]
    if probs_kind == 'sigmoid':
        signs.append(('predicted labels per image at 0.25', eval_metrics.get('label_coverage@0.25')))
    return [f'{what} {value:.1f} of {num_classes} classes: the model marks nearly every class present (collapsed)'
            for what, value in signs if value is not None and value >= COLLAPSE_FRACTION * num_classes]
