"""A warm interpreter for the tests' train.py / `-m timm_multilabel.cli` runs (see conftest.run_script).

Starting Python and importing torch, timm, accelerate and datasets costs several CPU seconds: most of a
refused-argument run, half of a tiny training run. This server imports them ONCE, then serves each
request by forking: the child is a fresh process (own pid and process group, exit status, stdout and
stderr at the file-descriptor level, atexit handlers) that runs the script as ``__main__`` with
``runpy``, as ``python train.py ...`` would; only the imports are already done.

Protocol (one JSON object a line): request on stdin ``{"args": [...], "cwd": DIR, "stdout": FILE,
"stderr": FILE, "env": {...}}``; replies on the fd given as argv[3]: ``{"pid": PID}`` after the fork, then
``{"rc": CODE, "cpu": SECONDS}`` (negative: killed by that signal) when the child has ended.
Whatever the imports printed goes in front of each child's stdout/stderr, as a fresh interpreter prints it.
"""
import gc
import io
import json
import os
import runpy
import sys
import threading


def _import_everything() -> None:
    import train  # noqa: F401  (torch, timm, accelerate, datasets, timm_multilabel)
    import timm_multilabel.cli  # noqa: F401
    from timm_multilabel.cli import annotate  # noqa: F401


def _child(request: dict, prefix_out: bytes, prefix_err: bytes, reply_fd: int) -> None:
    """Runs in the forked process; ends it (SystemExit or an uncaught exception, as the interpreter would)."""
    os.setsid()  # its own process group: a kill of the group reaches its DataLoader workers, not the server
    for fd, path, prefix in ((1, request['stdout'], prefix_out), (2, request['stderr'], prefix_err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(target, prefix)
        os.dup2(target, fd)
        os.close(target)
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again: no stdin, like capture_output with no input
    os.close(reply_fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    if os.environ.get('OMP_NUM_THREADS'):  # torch read it at import: apply this run's value
        import torch
        torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
    args = list(request['args'])
    if args[0] == '-m':
        sys.argv = ['-m', *args[2:]]  # runpy sets argv[0] to the module's file
        sys.path[0] = os.getcwd()
        runpy.run_module(args[1], run_name='__main__', alter_sys=True)
    else:
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name='__main__')
    sys.exit(0)


def main() -> None:
    root = sys.argv[1]
    sys.path[0] = root
    os.chdir(root)
    # capture what the imports print (at the fd level): each child's output starts with it
    saved = os.dup(1), os.dup(2)
    captured = []
    for fd in (1, 2):
        tmp = os.open(os.path.join(sys.argv[2], f'import-{fd}'), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(tmp, fd)
        captured.append(tmp)
    _import_everything()
    sys.stdout.flush()
    sys.stderr.flush()
    prefixes = []
    for fd, tmp, old in zip((1, 2), captured, saved):
        os.lseek(tmp, 0, 0)
        prefixes.append(os.read(tmp, 1 << 20))
        os.dup2(old, fd)
        os.close(tmp)
        os.close(old)
    # the imported objects to the permanent generation: a child's collections (and its exit) skip
    # them instead of touching, and so copying, every page of the heap (2.2 s -> 0.6 s CPU a run)
    gc.freeze()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    reply_fd = int(sys.argv[3])
    replies = io.open(reply_fd, 'w', buffering=1, closefd=False)
    replies.write(json.dumps({'ready': True, 'threads': others}) + '\n')
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, *prefixes, reply_fd)  # never returns
        replies.write(json.dumps({'pid': pid}) + '\n')
        _, status, usage = os.wait4(pid, 0)
        replies.write(json.dumps({'rc': os.waitstatus_to_exitcode(status),
                                  'cpu': usage.ru_utime + usage.ru_stime}) + '\n')


if __name__ == '__main__':
    main()
