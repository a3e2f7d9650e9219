# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records: what this collection knows about the files of a model directory, kept outside it.

A record lists every file of a model directory with the size and sha256 it was verified against and the
mtime it had then, so a re-run knows a file is intact from ``stat`` alone, and later steps know hashes
without reading gigabytes again. Where records live: state.py.
"""


import json
import os

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, makedirs, read_bytes, sweep_temps, unlink_with_temps

FORMAT = 1


class Record:
    """Verified files of one directory: {path: {size, sha256, revision, mtime_ns}} plus model facts."""

    def __init__(self, path, data=None):
        self.path = path
        self.data = data if isinstance(data, dict) else {}
        if not isinstance(self.data.get('files'), dict):
            self.data['files'] = {}

    @classmethod
    def load(cls, path):
        raw = read_bytes(path)
        try:
            data = json.loads(raw.decode('utf-8')) if raw else {}
        except ValueError:
            data = {}  # a torn or foreign record only costs a re-hash
        if data.get('format') != FORMAT:
            data = {}
        return cls(path, data)

    @property
    def files(self):
        return self.data['files']

    def matches(self, relative, size, sha256, stat):
        """True when ``stat`` of the file on disk is what was verified against ``size``/``sha256``."""
        entry = self.files.get(relative)
        return bool(
            entry and stat is not None and entry.get('sha256') == sha256 and entry.get('size') == size
            and stat.st_size == size and entry.get('mtime_ns') == stat.st_mtime_ns)

    def put(self, relative, size, sha256, revision, stat):
        self.files[relative] = {'size': size, 'sha256': sha256, 'revision': revision, 'mtime_ns': stat.st_mtime_ns}

    def save(self, **facts):
        self.data.update(facts)
        self.data['format'] = FORMAT
        makedirs(os.path.dirname(self.path))
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode('utf-8'))
        sweep_temps(self.path)

    def remove(self):
        unlink_with_temps(self.path)
