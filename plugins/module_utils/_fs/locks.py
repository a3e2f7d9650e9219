# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One writer per model: an flock, which the kernel drops when its holder dies,
so a killed run never leaves a lock that blocks the next one."""

import fcntl
import os
import time

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import makedirs


class LockTimeout(ModelseedError):
    pass


class FileLock:
    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self._fd = None

    def __enter__(self):
        makedirs(os.path.dirname(self.path))
        # Never through a symlink: a lock may sit in a directory others can write (the temp directory).
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0), 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise LockTimeout('%s is locked by another run for more than %ss' % (self.path, self.timeout))
                time.sleep(0.2)

    def fileno(self):
        return self._fd

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
