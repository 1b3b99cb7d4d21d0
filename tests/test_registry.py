"""The registries: registration, lookup, one-line errors, and plugins reached through entry points."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch.nn as nn

import timm_multilabel as tml
from timm_multilabel import UserError
from timm_multilabel.registry import Registry


def test_register_create_list_and_filter():
    reg = Registry('widget')

    @reg.register('small_widget')
    def small(size=1):
        return ('small', size)

    reg.register('big_widget', lambda size=9: ('big', size))
    assert reg.create('small_widget', size=3) == ('small', 3)
    assert reg.create('big_widget') == ('big', 9)
    assert 'small_widget' in reg and 'nothing' not in reg
    assert reg.names('big*') == ['big_widget']
    assert set(reg.names()) >= {'small_widget', 'big_widget'}


def test_bare_decorator_uses_the_function_name():
    reg = Registry('widget')

    @reg.register
    def plain_widget():
        return 1

    assert reg.create('plain_widget') == 1


def test_a_name_taken_by_another_factory_is_refused():
    reg = Registry('widget')
    reg.register('w', lambda: 1)
    with pytest.raises(ValueError, match="widget 'w' is already registered"):
        reg.register('w', lambda: 2)


def test_unknown_name_is_a_one_line_user_error_listing_the_choices():
    with pytest.raises(UserError) as e:
        tml.create_loss('no_such_loss')
    message = str(e.value)
    assert '\n' not in message
    assert "unknown loss 'no_such_loss'" in message and 'cross_entropy' in message and 'bce' in message


def test_builtin_entries_are_registered_beside_what_they_create():
    assert {'cross_entropy', 'bce'} <= set(tml.list_losses())
    assert {'mixup', 'label_pooling'} <= set(tml.list_target_transforms())
    assert {'classification', 'mile'} <= set(tml.list_tasks())
    task = tml.create_task('classification', model=nn.Linear(3, 2), criterion=nn.CrossEntropyLoss())
    assert task.name == 'classification'


PLUGIN = '''
import os

import torch.nn as nn

from timm_multilabel import register_loss, register_task
from timm_multilabel.task import ClassificationTask


class CountingCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy that counts its calls into a file (so the test sees it was used)."""

    def forward(self, logits, target):
        path = os.environ['TINY_PLUGIN_LOG']
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, 'w') as f:
            f.write(str(n + 1))
        return super().forward(logits, target)


@register_loss('tiny_counting_ce')
def tiny_counting_ce(**kwargs):
    return CountingCrossEntropy()


class UpdateCountingTask(ClassificationTask):
    name = 'tiny'

    def __init__(self, *args, start=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates = int(start)

    def after_update(self):
        self.updates += 1

    def log_state(self):
        return {'updates': self.updates}


@register_task('tiny_counting_task')
def tiny_counting_task(model, criterion=None, device=None, start=0, **kwargs):
    return UpdateCountingTask(model, criterion=criterion, device=device, start=start, verbose=False)
'''


@pytest.fixture(scope='module')
def installed_plugin(tmp_path_factory):
    """A tiny plugin package, pip-installed (no network, no build isolation) into its own folder."""
    root = tmp_path_factory.mktemp('plugin')
    src = root / 'src'
    (src / 'tml_tiny_plugin').mkdir(parents=True)
    (src / 'tml_tiny_plugin' / '__init__.py').write_text(PLUGIN)
    (src / 'pyproject.toml').write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tml-tiny-plugin"
        version = "0.1"

        [project.entry-points."timm_multilabel.plugins"]
        tiny = "tml_tiny_plugin"
    '''))
    target = root / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                    '--no-index', '--target', str(target), str(src)], check=True, capture_output=True)
    return target


@pytest.mark.slow
def test_train_py_trains_with_a_plugin_loss_and_task(installed_plugin, tmp_path, run):
    out = tmp_path / 'out'
    log = tmp_path / 'calls.txt'
    proc = run(['train.py', '--model', 'test_resnet', '--train-num-samples', '128', '--val-num-samples', '64',
                '-b', '32', '--workers', '0', '--epochs', '1', '--img-size', '24', '--output', out,
                '--loss', 'tiny_counting_ce', '--task', 'tiny_counting_task', '--task-kwargs', 'start=100'],
               env={'PYTHONPATH': str(installed_plugin), 'TINY_PLUGIN_LOG': str(log)})
    summary = json.loads((out / 'summary.json').read_text())
    assert int(log.read_text()) == 4  # the plugin's loss ran on each of the 128 / 32 batches
    assert summary['tiny'] == {'updates': 104}  # its task got after_update() once per update, kwargs applied
    assert summary['num_updates'] == 4
    assert 'top1' in summary['metrics'] and proc.returncode == 0


@pytest.mark.slow
def test_an_unknown_plugin_name_is_refused_before_training(installed_plugin, tmp_path, run):
    proc = run(['train.py', '--model', 'test_resnet', '--output', tmp_path / 'out', '--loss', 'tiny_counting_cee'],
               env={'PYTHONPATH': str(installed_plugin)}, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: --loss tiny_counting_cee: unknown')
    assert 'tiny_counting_ce' in err[0]  # the plugin's entries are listed
    assert not (tmp_path / 'out').exists()
