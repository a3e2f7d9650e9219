# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download one file: resumable with Range, hashed while it streams, renamed only when verified."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.modelseed.fleet.plugins.module_utils.durable import fsync_path, start_writeback
from ansible_collections.modelseed.fleet.plugins.module_utils.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils.hashing import update_from_file
from ansible_collections.modelseed.fleet.plugins.module_utils.http_client import HttpError
from ansible_collections.modelseed.fleet.plugins.module_utils.paths import makedirs, unlink

# Each chunk is received, hashed and written while it is still in the CPU cache; hashing and
# writing release the GIL. 129 pages, not a power of two: writes at offsets aligned to large powers
# of two get large page-cache folios, which need large free blocks of memory, and on a virtual
# machine with free page reporting those were handed back to the host and fault in again (two to
# three times the system time of a download with 512 KiB or 4 MiB chunks).
BUFFER = 129 * 4096
# With sync, writing to disk starts every this many bytes of a download.
WRITEBACK_CHUNK = 8 << 20
_CONTENT_RANGE = re.compile(r'^bytes (\d+)-(\d+)/(\d+|\*)$')


class FetchError(Exception):
    pass


class _Partial(object):
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
    transferred = [0]
    view = memoryview(bytearray(BUFFER))

    def attempt():
        if partial.length >= size:
            return
        headers = {'Range': 'bytes=%d-' % partial.length} if partial.length else {}
        with client.open(url, headers=headers) as resp:
            if partial.length and resp.status == 200:
                partial.restart()  # the server ignored Range: take the whole body
            elif partial.length and not _continues(resp, partial.length):
                partial.restart()
                raise HttpError('%s: the server answered a resume with another range' % label, url=url, retryable=True)
            with open(partial.path, 'ab' if partial.length else 'wb') as out:
                flushed = partial.length
                while True:
                    n = resp.readinto(view)
                    if not n:
                        break
                    if partial.length + n > size:
                        raise FetchError('%s: the hub sent more than the %d bytes it lists' % (label, size))
                    out.write(view[:n])
                    partial.digest.update(view[:n])
                    partial.length += n
                    transferred[0] += n
                    if sync and partial.length - flushed >= WRITEBACK_CHUNK:
                        # The disk writes while the network reads: the fsync before the rename then waits for little.
                        out.flush()
                        start_writeback(out.fileno(), flushed, partial.length - flushed)
                        flushed = partial.length
                    if progress:
                        progress(n)
        if partial.length < size:
            raise HttpError('%s: transfer ended after %d of %d bytes' % (label, partial.length, size), url=url, retryable=True)

    for retry_from_zero in (True, False):
        if size == 0:
            open(partial.path, 'wb').close()
        else:
            client.with_retries(attempt)
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
    return transferred[0]


def _continues(resp, offset):
    """Whether a response to ``Range: bytes=<offset>-`` really starts at ``offset``."""
    if resp.status != 206:
        return False
    match = _CONTENT_RANGE.match(resp.headers.get('Content-Range', ''))
    return bool(match) and int(match.group(1)) == offset
