# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stream the tar of one model of a bundle into a sink (see install.py), judging every member.

Each tar is read exactly once, in large blocks. One helper thread hashes the raw
tar stream while the caller's thread parses headers, hashes each member and
writes it to a sink; hashlib and file writes release the GIL, so on two cores
both hashes run side by side. Every header is judged before a byte of its member
is written: only regular files and directories that the manifest names, at safe
relative paths, with the manifest's size, once each. A member's sha256 is checked
when it ends, the whole tar's sha256 and size when the stream ends.
"""

import hashlib
import posixpath
import queue
import re
import tarfile
import threading

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import check_relative_path
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.sdk_metadata import METADATA_FILES

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
# Large reads keep the per-call cost of Python small next to hashing and writing.
BUFFER = 1024 * 1024
BUFFERS = 8
# pax extended headers and GNU long names: a few KiB in any honest tar.
MAX_EXTENDED_HEADER = 1024 * 1024
_PAX_RECORD = re.compile(br'(\d+) ')
# pax keywords that do not change what is extracted (times and owners are ours to set).
_PAX_IGNORED = ('mtime', 'atime', 'ctime', 'uid', 'gid', 'uname', 'gname', 'comment', 'charset')
_KINDS = {
    tarfile.SYMTYPE: 'a symbolic link',
    tarfile.LNKTYPE: 'a hard link',
    tarfile.GNUTYPE_LONGLINK: 'a link (GNU long link name)',
    tarfile.CHRTYPE: 'a character device',
    tarfile.BLKTYPE: 'a block device',
    tarfile.FIFOTYPE: 'a FIFO',
    tarfile.CONTTYPE: 'a contiguous file',
    tarfile.GNUTYPE_SPARSE: 'a sparse file',
    tarfile.XGLTYPE: 'a pax global header',
}


# -- tar streaming ---------------------------------------------------------------


class SerialWorker(threading.Thread):
    """Runs tasks one after the other, in the order given. After a task fails, the rest are skipped
    (but releases still run) and the error is kept for the submitting thread to raise."""

    def __init__(self):
        super().__init__(name='bundle-reader', daemon=True)
        self._tasks = queue.SimpleQueue()
        self.error = None
        self.start()

    def run(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            function, args, always = task
            if self.error is None or always:
                try:
                    function(*args)
                except BaseException as exc:  # handed to the submitting thread by check()
                    if self.error is None:
                        self.error = exc

    def submit(self, function, *args):
        self._tasks.put((function, args, False))

    def always(self, function, *args):
        self._tasks.put((function, args, True))

    def check(self):
        if self.error is not None:
            raise self.error

    def sync(self):
        """Wait until every task submitted so far has run."""
        done = threading.Event()
        self.always(done.set)
        done.wait()

    def stop(self):
        if self.is_alive():
            self._tasks.put(None)
            self.join()


class TarReader:
    """The raw bytes of one tar, read in large blocks into a small pool of buffers.

    A worker thread (``self.worker``) hashes each block as soon as it is read, and runs whatever
    else the caller submits in stream order (writing member data); a buffer goes back to the pool
    when the worker has done everything queued up to the moment the caller moved past it. At most
    ``limit`` bytes are read from ``raw``.
    """

    def __init__(self, raw, limit, buffer_size=BUFFER, buffers=BUFFERS):
        self.raw = raw
        self.limit = limit
        self.read_total = 0
        self.offset = 0  # bytes handed to the caller
        self._buffers = [bytearray(buffer_size) for index in range(max(2, buffers))]
        self._free = queue.SimpleQueue()
        for index in range(len(self._buffers)):
            self._free.put(index)
        self._slot = None
        self._view = memoryview(b'')
        self._pos = 0
        self._eof = False
        self._digest = hashlib.sha256()
        self.worker = SerialWorker()

    def _fill(self):
        if self._slot is not None:
            self.worker.always(self._free.put, self._slot)
            self._slot = None
            self._view, self._pos = memoryview(b''), 0
        if self._eof:
            return False
        slot = self._free.get()
        self.worker.check()
        buf = memoryview(self._buffers[slot])
        want = min(len(buf), self.limit - self.read_total)
        n = 0
        while n < want:
            got = self.raw.readinto(buf[n:want])
            if not got:
                self._eof = True
                break
            n += got
        if self.read_total + n >= self.limit:
            self._eof = True
        self.read_total += n
        if n:
            self.worker.submit(self._digest.update, buf[:n])
        self._slot, self._view, self._pos = slot, buf[:n], 0
        return n > 0

    def take(self, n):
        """A view of at most ``n`` next bytes (empty at the end). It stays valid for tasks submitted
        to ``worker`` before the next ``take`` that needs a new block."""
        if self._pos >= len(self._view) and not self._fill():
            return memoryview(b'')
        view = self._view[self._pos:self._pos + n]
        self._pos += len(view)
        self.offset += len(view)
        return view

    def read(self, n):
        """Up to ``n`` bytes, fewer only at the end of the stream."""
        parts = []
        while n:
            view = self.take(n)
            if not view:
                break
            parts.append(view.tobytes())
            n -= len(view)
        return b''.join(parts)

    def drain(self):
        """Consume the rest of the stream; True when it was all zero bytes."""
        zeros = True
        while True:
            view = self.take(BUFFER)
            if not view:
                return zeros
            if zeros and view != bytes(len(view)):
                zeros = False

    def beyond_limit(self):
        """True when the raw stream has more bytes than ``limit``."""
        return self.read_total >= self.limit and bool(self.raw.readinto(bytearray(1)))

    def sync(self):
        """Wait for the worker; raise what it failed with."""
        self.worker.sync()
        self.worker.check()

    def hexdigest(self):
        self.sync()
        return self._digest.hexdigest()

    def close(self):
        self.worker.stop()


def _parse_pax(data, where):
    """{keyword: value} of a pax extended header; raises BundleError on anything malformed."""
    values = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b'\0') == b'':
            break
        match = _PAX_RECORD.match(data, pos)
        length = int(match.group(1)) if match else 0
        record = data[pos:pos + length]
        if not match or length <= len(match.group(0)) or len(record) != length or not record.endswith(b'\n') or b'=' not in record:
            raise BundleError('%s: malformed pax extended header' % where)
        key, value = record[len(match.group(0)):-1].split(b'=', 1)
        try:
            values[key.decode('utf-8')] = value.decode('utf-8')
        except UnicodeDecodeError:
            raise BundleError('%s: pax extended header is not UTF-8' % where)
        pos += length
    return values


def _apply_pax(info, pax, where):
    for key, value in pax.items():
        if key == 'path':
            info.name = value
        elif key == 'linkpath':
            info.linkname = value
        elif key == 'size':
            if not value.isdigit():
                raise BundleError('%s: pax size %r is not a number' % (where, value))
            info.size = int(value)
        elif key.startswith('GNU.sparse.'):
            raise BundleError('%s: %s is a sparse file, which bundles never hold' % (where, info.name))
        elif key == 'hdrcharset':
            raise BundleError('%s: pax hdrcharset %r: names must be UTF-8' % (where, value))
        elif key in _PAX_IGNORED or key.startswith('SCHILY.') or key.startswith('LIBARCHIVE.'):
            continue
        else:
            raise BundleError('%s: unsupported pax keyword %r' % (where, key))


def _padded(size):
    return (size + BLOCK - 1) // BLOCK * BLOCK


class _Judge:
    """What a model's tar must hold (``bundle_format.tar_members``), and what it held so far."""

    def __init__(self, model, label):
        self.label = label
        self.expected = dict((name, (kind, size)) for name, kind, size in bundle_format.tar_members(model))
        self.files = dict((f['path'], f) for f in model['files'])
        self.metadata_sha256 = dict((m['path'], m['sha256']) for m in model['metadata'])
        self.seen = {}

    def fail(self, name, why):
        raise BundleError('%s: tar member %r %s' % (self.label, name, why))

    def member(self, info):
        """'file', 'dir' or 'metadata' for an acceptable header; raises BundleError otherwise."""
        name = info.name
        if info.type in _KINDS:
            target = ' -> %r' % info.linkname if info.linkname else ''
            escapes = ''
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) and info.linkname:
                base = posixpath.dirname(name) if info.type == tarfile.SYMTYPE else ''
                resolved = posixpath.normpath(posixpath.join(base, info.linkname))
                if info.linkname.startswith('/') or resolved == '..' or resolved.startswith('../'):
                    escapes = ', pointing outside the model'
            self.fail(name, 'is %s%s%s; bundles hold only regular files and directories' % (_KINDS[info.type], target, escapes))
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            self.fail(name, 'has unsupported type %r' % (info.type,))
        is_dir = info.type == tarfile.DIRTYPE
        if is_dir or name not in METADATA_FILES:
            try:
                check_relative_path(name)
            except ValueError as exc:
                self.fail(name, 'has an unsafe name: %s' % exc)
        if name in self.seen:
            both = (self.seen[name] == 'dir') != is_dir
            self.fail(name, 'is both a file and a directory' if both else 'appears twice')
        parent = posixpath.dirname(name)
        while parent:
            if self.seen.get(parent, 'dir') != 'dir':
                self.fail(name, 'is inside %r, which the tar holds as a file: a member cannot be both a file and a directory' % parent)
            parent = posixpath.dirname(parent)
        wanted = self.expected.get(name)
        if wanted is None:
            self.fail(name, 'is not in the manifest')
        kind, size = wanted
        if is_dir != (kind == 'dir'):
            self.fail(name, 'is a %s, the manifest has it as a %s: a member cannot be both a file and a directory' % (
                'directory' if is_dir else 'file', 'directory' if kind == 'dir' else 'file'))
        if info.size != size:
            self.fail(name, 'has %d bytes, the manifest says %d' % (info.size, size))
        self.seen[name] = kind
        return kind

    def missing(self):
        return sorted(set(self.expected) - set(self.seen))


def _next_header(stream, judge):
    """The next member's TarInfo with pax and GNU long-name headers applied, or None at the end."""
    pax, long_name = None, None
    while True:
        where = '%s: tar header at byte %d' % (judge.label, stream.offset)
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise BundleError('%s: the tar ends early, in a header at byte %d (no end-of-archive marker)' % (
                judge.label, stream.offset - len(block)))
        if block == ZERO_BLOCK:
            if pax is not None or long_name is not None:
                raise BundleError('%s: extended header not followed by a member' % where)
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, 'utf-8', 'strict')
        except UnicodeDecodeError:
            raise BundleError('%s: member name is not UTF-8' % where)
        except tarfile.HeaderError as exc:
            raise BundleError('%s is corrupt: %s' % (where, exc))
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME):
            if pax is not None or long_name is not None:
                raise BundleError('%s: two extended headers in a row' % where)
            if info.size > MAX_EXTENDED_HEADER:
                raise BundleError('%s: extended header of %d bytes' % (where, info.size))
            data = stream.read(_padded(info.size))
            if len(data) < _padded(info.size):
                raise BundleError('%s: the tar ends early, inside an extended header' % (judge.label,))
            data = data[:info.size]
            if info.type == tarfile.GNUTYPE_LONGNAME:
                try:
                    long_name = data.rstrip(b'\0').decode('utf-8')
                except UnicodeDecodeError:
                    raise BundleError('%s: long member name is not UTF-8' % where)
            else:
                pax = _parse_pax(data, where)
            continue
        if long_name is not None:
            info.name = long_name.rstrip('/') if info.type == tarfile.DIRTYPE else long_name
        if pax:
            _apply_pax(info, pax, where)
        if info.type == tarfile.AREGTYPE and info.name.endswith('/'):
            info.type = tarfile.DIRTYPE
        if info.type == tarfile.DIRTYPE:
            info.name = info.name.rstrip('/')
        return info


def extract_tar(raw, model, sink, buffer_size=BUFFER):
    """Stream one model's tar from ``raw`` into ``sink``, checking everything on the way.

    ``sink`` provides ``directory(path)`` and ``open_file(path, size)`` (called by this thread),
    ``handle.write(view)`` and ``close_file(handle, path, mtime)`` -> stat (run by the stream's
    worker, in order), ``discard(handle, path)`` and ``abort()`` (close whatever is still open).
    SDK metadata members are checked in memory and not written: the installer writes the
    metadata its target layout needs. Files get the commit's time (``created_at``) as mtime,
    whatever their header says. Returns {path: stat}.
    """
    label = bundle_format.model_label(model)
    judge = _Judge(model, label)
    stream = TarReader(raw, model['tar_size'], buffer_size=buffer_size)
    written = {}
    try:
        while True:
            info = _next_header(stream, judge)
            if info is None:
                break
            kind = judge.member(info)
            if kind == 'dir':
                sink.directory(info.name)
            elif kind == 'metadata':
                data = stream.read(info.size)
                if len(data) < info.size:
                    judge.fail(info.name, 'is cut short: the tar ends early')
                digest = hashlib.sha256(data).hexdigest()
                if digest != judge.metadata_sha256[info.name]:
                    judge.fail(info.name, 'has sha256 %s, the manifest says %s' % (digest, judge.metadata_sha256[info.name]))
            else:
                _copy_member(stream, info, judge, sink, model['created_at'], written)
            padding = _padded(info.size) - info.size
            if padding and len(stream.read(padding)) < padding:
                raise BundleError('%s: the tar ends early, after member %r' % (label, info.name))
        missing = judge.missing()
        if missing:
            raise BundleError('%s: %d member(s) the manifest implies are not in %s, for example %r' % (
                label, len(missing), model['tar'], missing[0]))
        if not stream.drain():
            raise BundleError('%s: %s has data after its end-of-archive marker' % (label, model['tar']))
        if stream.read_total < model['tar_size']:
            raise BundleError('%s: %s ends after %d bytes, the manifest says %d' % (
                label, model['tar'], stream.read_total, model['tar_size']))
        if stream.beyond_limit():
            raise BundleError('%s: %s is longer than the %d bytes the manifest says' % (label, model['tar'], model['tar_size']))
        digest = stream.hexdigest()  # waits for every write and close
        if digest != model['tar_sha256']:
            raise BundleError('%s: %s has sha256 %s, the manifest and %s say %s' % (
                label, model['tar'], digest, bundle_format.SUMS, model['tar_sha256']))
        return written
    except BaseException:
        stream.close()
        sink.abort()
        raise
    finally:
        stream.close()


def _copy_member(stream, info, judge, sink, mtime, written):
    """Hash the member here, write it on the worker; the verdict needs no wait for the disk."""
    entry = judge.files[info.name]
    handle = sink.open_file(info.name, info.size)
    digest = hashlib.sha256()
    left = info.size
    try:
        while left:
            view = stream.take(left)
            if not view:
                judge.fail(info.name, 'is cut short after %d of %d bytes: the tar ends early' % (info.size - left, info.size))
            digest.update(view)
            stream.worker.submit(handle.write, view)
            left -= len(view)
        if digest.hexdigest() != entry['sha256']:
            judge.fail(info.name, 'has sha256 %s, the manifest says %s' % (digest.hexdigest(), entry['sha256']))
    except BaseException:
        stream.worker.sync()
        sink.discard(handle, info.name)
        raise
    stream.worker.submit(_close_member, sink, handle, info.name, mtime, written)


def _close_member(sink, handle, name, mtime, written):
    written[name] = sink.close_file(handle, name, mtime)
