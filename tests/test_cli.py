"""`timm-multilabel`: the command table, --help of every command, one-line errors and --debug."""
import subprocess
import sys

import pytest

from timm_multilabel import cli
from timm_multilabel.errors import UserError

COMMANDS = ['annotate', 'import-relabel', 'show', 'push-maps', 'export', 'eval', 'check-images']


def test_the_table_lists_every_command():
    assert list(cli.COMMANDS) == COMMANDS
    for name, command in cli.COMMANDS.items():
        assert callable(command.module.add_arguments) and callable(command.module.run), name
        assert command.help and '\n' not in command.help, name
    sub = next(a for a in cli.build_parser()._actions if a.dest == 'command')
    assert list(sub.choices) == COMMANDS


@pytest.mark.parametrize('name', COMMANDS)
def test_help_of_each_command(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: timm-multilabel {name}') and cli.COMMANDS[name].help in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def _failing_run(args):
    raise UserError('--maps x: no such folder')


@pytest.mark.parametrize('where', ['before', 'after'])
def test_user_error_is_one_line_and_debug_reraises(monkeypatch, capsys, where):
    monkeypatch.setattr(cli.COMMANDS['show'].module, 'run', _failing_run)
    argv = ['show', '--maps', 'x', '--image', 'i.jpg', '--out', 'o.png']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == 'timm-multilabel show: error: --maps x: no such folder\n'
    debug = ['--debug', *argv] if where == 'before' else [*argv, '--debug']
    with pytest.raises(UserError, match='no such folder'):
        cli.main(debug)


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.COMMANDS['push-maps'].module, 'run', interrupted)
    assert cli.main(['push-maps', 'd', 'acme/maps']) == 130
    assert capsys.readouterr().err == 'timm-multilabel push-maps: interrupted\n'


def test_python_m_runs_the_cli():
    proc = subprocess.run([sys.executable, '-m', 'timm_multilabel.cli', '--help'], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('usage: timm-multilabel') and all(name in proc.stdout for name in COMMANDS)
