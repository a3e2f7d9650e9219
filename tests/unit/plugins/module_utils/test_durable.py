"""durable: which files and directories sync_tree flushes (seen in the system calls); failpoints: inert unless set,
and then a SIGKILL at the named hit."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import ENV, failpoint
from support.syscall_trace import calls, strace_available, trace

BUILD = str(Path(__file__).resolve().parents[4] / '.build')


def python(code, env=None, log=None):
    command = [sys.executable, '-c', 'import sys; sys.path.insert(0, %r)\n%s' % (BUILD, code)]
    full_env = dict(os.environ, **(env or {}))
    if log is None:
        return subprocess.run(command, env=full_env, capture_output=True, text=True, check=False)
    return trace(command, log, full_env)


def test_failpoint_does_nothing_unless_its_step_is_named(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    failpoint('swap.after')
    monkeypatch.setenv(ENV, 'swap.before')
    failpoint('swap.after')


def test_failpoint_kills_at_the_named_hit():
    code = ('from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint\n'
            'for n in range(3):\n    failpoint("swap.after")\n    print(n, flush=True)\n')
    proc = python(code, {ENV: 'swap.after@2'})
    assert proc.returncode == -signal.SIGKILL and proc.stdout.split() == ['0']
    assert python(code, {ENV: 'swap.after'}).stdout == ''
    assert python(code, {ENV: ''}).stdout.split() == ['0', '1', '2']


def test_sync_tree_flushes_every_file_and_directory_once_and_follows_no_link(tmp_path):
    if not strace_available():
        pytest.skip('strace is not installed (make sysdeps)')
    top, outside = tmp_path / 'top', tmp_path / 'outside'
    (top / 'a' / 'b').mkdir(parents=True)
    outside.mkdir()
    (outside / 'secret').write_bytes(b's')
    for rel in ('f', 'a/g', 'a/b/h', 'done'):
        (top / rel).write_bytes(b'x')
    os.symlink(str(outside), str(top / 'a' / 'to-dir'))
    os.symlink(str(outside / 'secret'), str(top / 'to-file'))
    log = tmp_path / 'trace'
    proc = python('from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import sync_tree\n'
                  'sync_tree(%r, done={"done"})' % str(top), log=log)
    assert proc.returncode == 0, proc.stderr
    synced = [c.fd_path() for c in calls(log) if c.name == 'fsync']
    wanted = [str(top / rel) for rel in ('f', 'a/g', 'a/b/h', 'a/b', 'a')] + [str(top)]
    assert sorted(synced) == sorted(wanted)
    assert synced.index(str(top / 'a/b/h')) < synced.index(str(top / 'a/b')) < synced.index(str(top / 'a')) < synced.index(str(top))
