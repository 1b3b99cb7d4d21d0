"""curves.png from a child process (training/curves.py): drawings arrive, a failed or missing child falls
back to drawing in the training process, and the child starts without torch."""
import logging
import subprocess
import sys

import pytest
import torch
from PIL import Image

from timm_multilabel.training.curves import CurvesProcess, plot_curves

pytest.importorskip('matplotlib')


def _rows(n, top1=10.0):
    return [{'epoch': e, 'train_loss': torch.tensor(2.0 / (e + 1)), 'eval_loss': 1.5 / (e + 1), 'top1': top1 * e,
             'real_acc': None, 'mAP': None, 'lr': 0.1, 'mile_phase': 'teacher'} for e in range(n)]


def _png_pixels(path):
    return list(Image.open(path).convert('RGB').getdata())


def test_the_child_draws_what_plot_curves_draws(tmp_path):
    curves = CurvesProcess(tmp_path / 'curves.png', 'run')
    assert curves.proc is not None
    curves.draw(_rows(2))
    curves.draw(_rows(3))
    curves.close()
    assert curves.proc is None
    # the last history sent, as drawn in this process from the same (plain) rows
    plot_curves(tmp_path / 'here.png', [{k: (v.item() if hasattr(v, 'item') else v) for k, v in r.items()}
                                        for r in _rows(3)], 'run')
    assert _png_pixels(tmp_path / 'curves.png') == _png_pixels(tmp_path / 'here.png')
    plot_curves(tmp_path / 'two.png', _rows(2), 'run')
    assert _png_pixels(tmp_path / 'curves.png') != _png_pixels(tmp_path / 'two.png')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['curves.png', 'here.png', 'two.png']


def test_close_does_not_wait_for_forked_processes_holding_the_pipe(tmp_path):
    """DataLoader workers are forked after the child starts and keep copies of its stdin pipe."""
    import os
    import time
    curves = CurvesProcess(tmp_path / 'curves.png', 'run')
    holder = os.fork()
    if holder == 0:  # a stand-in for a persistent worker
        time.sleep(30)
        os._exit(0)
    try:
        curves.draw(_rows(2))
        start = time.time()
        curves.close(timeout=20)
        assert time.time() - start < 15, 'close waited for an end of file the forked process held back'
        assert (tmp_path / 'curves.png').exists()
    finally:
        os.kill(holder, 9)
        os.waitpid(holder, 0)


def test_a_child_that_cannot_start_draws_here(tmp_path):
    curves = CurvesProcess(tmp_path / 'curves.png', command=[str(tmp_path / 'no-such-python')])
    assert curves.proc is None
    curves.draw(_rows(2))
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'  # drawn at once, here
    curves.close()


def test_a_child_that_fails_leaves_the_drawing_to_close(tmp_path, caplog):
    curves = CurvesProcess(tmp_path / 'curves.png', command=[sys.executable, '-c', 'import sys; sys.exit(3)'])
    curves.proc.wait()
    with caplog.at_level(logging.WARNING):
        curves.draw(_rows(2))  # the pipe may or may not be broken yet: either way the PNG gets drawn
        curves.close()
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'curves process' in caplog.text


def test_the_child_imports_no_torch():
    code = 'import sys, timm_multilabel.training.curves; print(sorted({"torch", "timm"} & set(sys.modules)))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'
