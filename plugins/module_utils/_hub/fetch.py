# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download one file: resumable with Range, hashed while it streams, renamed only when verified."""

import hashlib
import os

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_path, start_writeback
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import update_from_file
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import makedirs, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import ResumableGet

# Each chunk is received, hashed and written while it is still in the CPU cache; hashing and
# writing release the GIL. 129 pages, not a power of two: writes at offsets aligned to large powers
# of two get large page-cache folios, which need large free blocks of memory, and on a virtual
# machine with free page reporting those were handed back to the host and fault in again (two to
# three times the system time of a download with 512 KiB or 4 MiB chunks).
BUFFER = 129 * 4096
# With sync, writing to disk starts every this many bytes of a download.
WRITEBACK_CHUNK = 8 << 20


class FetchError(ModelseedError):
    pass


class _Partial:
    """A partial download on disk and the sha256 of the bytes it already holds."""

    def __init__(self, path, size):
        self.path = path
        self.digest = hashlib.sha256()
        self.length = 0
        if os.path.isfile(path):
            if os.path.getsize(path) <= size:
                self.length = update_from_file(self.digest, path)
            else:
                unlink(path)
        self.resumed = self.length

    def restart(self):
        unlink(self.path)
        self.digest = hashlib.sha256()
        self.length = 0


def fetch_file(client, url, partial_path, final_path, size, sha256, label, progress=None, sync=True):
    """Fetch ``url`` into ``final_path`` through ``partial_path``; return bytes transferred.

    A wrong hash after a resumed transfer is retried once from zero, since the
    earlier bytes may be what was wrong; a wrong hash from zero is final. With ``sync``
    the verified bytes are on disk before the file gets its name.
    """
    makedirs(os.path.dirname(partial_path))
    partial = _Partial(partial_path, size)
    transferred = 0
    for retry_from_zero in (True, False):
        if size == 0:
            open(partial.path, 'wb').close()
        elif partial.length < size:
            transferred += _receive(client, url, partial, size, label, progress, sync)
        actual = partial.digest.hexdigest()
        if actual == sha256:
            break
        resumed = partial.resumed
        partial.restart()
        partial.resumed = 0
        if not (retry_from_zero and resumed):
            raise FetchError('%s: sha256 %s does not match the hub listing %s; nothing was kept' % (label, actual, sha256))
    os.chmod(partial.path, 0o644)
    if sync:
        fsync_path(partial.path)
    makedirs(os.path.dirname(final_path))
    failpoint('fetch.before-rename')
    os.rename(partial.path, final_path)
    failpoint('fetch.after-rename')
    return transferred


def _receive(client, url, partial, size, label, progress, sync):
    """Bring ``partial`` to ``size`` bytes of ``url``, hashing as it writes; return the bytes received."""
    view = memoryview(bytearray(BUFFER))
    received = 0
    with open(partial.path, 'ab') as out:
        flushed = [partial.length]

        def restart():
            # The server sends the whole body again: what the partial held goes, its hash starts over.
            out.seek(0)
            out.truncate()
            partial.digest, partial.length, flushed[0] = hashlib.sha256(), 0, 0

        body = ResumableGet(client, url, start=partial.length, expected_size=size, label=label, on_restart=restart)
        try:
            while True:
                n = body.readinto(view)
                if not n:
                    break
                if partial.length + n > size:
                    raise FetchError('%s: the hub sent more than the %d bytes it lists' % (label, size))
                out.write(view[:n])
                partial.digest.update(view[:n])
                partial.length += n
                received += n
                if sync and partial.length - flushed[0] >= WRITEBACK_CHUNK:
                    # The disk writes while the network reads: the fsync before the rename then waits for little.
                    out.flush()
                    start_writeback(out.fileno(), flushed[0], partial.length - flushed[0])
                    flushed[0] = partial.length
                if progress:
                    progress(n)
        finally:
            body.close()
    return received
