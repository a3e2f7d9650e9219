# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of a long download, in a small JSON file a poller can read while it runs."""

import json
import os
import threading
import time

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, makedirs, unlink

INTERVAL = 2.0


class Progress:
    def __init__(self, path, model_id, files_total, bytes_total):
        self.path = path
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self.state = {'model': model_id, 'files_total': files_total, 'files_done': 0,
                      'bytes_total': bytes_total, 'bytes_done': 0}

    def add_bytes(self, n):
        with self._lock:
            self.state['bytes_done'] += n
        if self.due():
            self.write()

    def file_done(self):
        with self._lock:
            self.state['files_done'] += 1

    def due(self):
        return time.monotonic() - self._last >= INTERVAL

    def write(self):
        with self._lock:
            self._last = time.monotonic()
            elapsed = max(self._last - self._start, 1e-6)
            state = dict(self.state, rate=int(self.state['bytes_done'] / elapsed), elapsed=round(elapsed, 1))
        try:
            makedirs(os.path.dirname(self.path))
            atomic_write(self.path, json.dumps(state).encode('utf-8'))
        except OSError:
            pass  # progress is informative only; never fail a download over it

    def finish(self):
        unlink(self.path)
