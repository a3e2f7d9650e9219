# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tars of a bundle (see format.py): deterministic, streamed and hashed in one pass.

The tar writer does not use ``tarfile.add``, which stats and opens each file
itself and copies through small buffers. Members are laid out back to back in a
few large reusable buffers: headers, file data read straight into the buffer,
padding. A full buffer is written to the tar with ``os.write`` by the calling
thread while another thread feeds it to the sha256 of the whole stream (and,
for verify=full, a third to the sha256 of each file in it): all of them release
the GIL on large buffers, so hashing costs little wall time next to the copy,
and memory stays at a few buffers whatever the model size. Writeback of the tar
is started as it grows, so the fsync before its rename is short.

Headers are POSIX pax (ustar plus an extended header for names longer than
100 bytes or not ASCII, and sizes of 8 GiB and more), byte for byte what
``tarfile.TarInfo.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')`` of
CPython 3.11+ gives for the same fields. They are built here, not by tarfile,
because older tarfile releases fill the device fields of regular files
differently: the tar must not depend on the staging host's Python.
"""

import hashlib
import os
import queue
import stat
import threading

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile.RECORDSIZE, GNU tar's default blocking factor
BUFFER_SIZE = 8 * 1024 * 1024
BUFFERS = 4
# Start writeback of the tar every so many bytes, so the fsync before the rename finds little left to do.
WRITEBACK_EVERY = 64 * 1024 * 1024
REGTYPE, DIRTYPE, XHDTYPE = b'0', b'5', b'x'
_NUL = b'\0'
_PAX_NAME = '././@PaxHeader'
PROBLEMS_SHOWN = 5


class BundleWriteError(ModelseedError):
    pass


# -- tar headers ------------------------------------------------------------


def _stn(value, length):
    value = value[:length]
    return value + _NUL * (length - len(value))


def _itn(value, digits):
    return ('%0*o' % (digits - 1, value)).encode('ascii') + _NUL


def _ustar(name, mode, size, mtime, typeflag):
    """One 512-byte ustar header block; ``name`` is bytes already cut to what fits."""
    parts = [
        _stn(name, 100), _itn(mode & 0o7777, 8), _itn(0, 8), _itn(0, 8), _itn(size, 12), _itn(mtime, 12),
        b' ' * 8, typeflag, _stn(b'', 100), b'ustar\x0000', _stn(b'', 32), _stn(b'', 32),
        _stn(b'', 8), _stn(b'', 8), _stn(b'', 155),
    ]
    buf = b''.join(parts)
    buf += _NUL * (BLOCK - len(buf))
    checksum = 256 + sum(buf[:148]) + sum(buf[156:])
    return buf[:148] + ('%06o' % checksum).encode('ascii') + _NUL + buf[155:]


def _pax_records(pairs):
    out = b''
    for keyword, value in pairs:
        body = b' ' + keyword.encode('utf-8') + b'=' + value.encode('utf-8') + b'\n'
        length = len(body)
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode('ascii') + body
    return out


def header(name, kind, size, mtime):
    """Header bytes (pax extended header included when needed) of one member.

    ``kind`` is 'dir' or 'file'; directories get a trailing slash, mode 0755,
    files 0644; owner and group 0 without names.
    """
    if kind == 'dir':
        name, mode, typeflag, size = name + '/', bundle_format.DIR_MODE, DIRTYPE, 0
    else:
        mode, typeflag = bundle_format.FILE_MODE, REGTYPE
    try:
        name.encode('utf-8')
    except UnicodeEncodeError:
        raise BundleWriteError('%r is not a UTF-8 file name' % (name,))
    pax = []
    try:
        name.encode('ascii')
        if len(name) > 100:
            pax.append(('path', name))
    except UnicodeEncodeError:
        pax.append(('path', name))
    fields = {'size': size, 'mtime': mtime}
    for key in ('size', 'mtime'):
        if not 0 <= fields[key] < 8 ** 11:
            pax.append((key, str(fields[key])))
            fields[key] = 0
    out = b''
    if pax:
        records = _pax_records(pax)
        out = _ustar(_PAX_NAME.encode('ascii'), 0, len(records), 0, XHDTYPE) + records + _padding(len(records))
    return out + _ustar(name.encode('ascii', 'replace'), mode, fields['size'], fields['mtime'], typeflag)


def _padding(size):
    return _NUL * (-size % BLOCK)


def member_size(name, kind, size, mtime):
    """Bytes one member takes in the tar: header(s), data, padding."""
    data = size if kind != 'dir' else 0
    return len(header(name, kind, size, mtime)) + data + (-data % BLOCK)


def archive_size(member_sizes):
    """Size of a tar whose members take ``member_sizes`` bytes: plus end-of-archive blocks and record padding."""
    total = sum(member_sizes) + 2 * BLOCK
    return total + (-total % RECORD)


# -- the streaming writer ---------------------------------------------------


class _Filled:
    """A buffer handed to the hashing threads: the first ``length`` bytes are tar stream."""

    def __init__(self, buf, length, segments, pending):
        self.buf = buf
        self.length = length
        self.segments = segments  # [(start, end, file digest)]
        self.pending = pending    # hashing threads still to see it


class _Hasher(threading.Thread):
    """Takes filled buffers in order; ``files`` hashes the file segments, else the whole stream."""

    def __init__(self, release, files=False):
        super().__init__(name='bundle-hash-files' if files else 'bundle-hash-stream')
        self.daemon = True
        self.files = files
        self.digest = hashlib.sha256()
        self.release = release
        self.todo = queue.Queue()
        self.error = None

    def run(self):
        while True:
            item = self.todo.get()
            if item is None:
                return
            try:
                if self.error is None:
                    view = memoryview(item.buf)
                    if self.files:
                        for start, end, digest in item.segments:
                            digest.update(view[start:end])
                    else:
                        self.digest.update(view[:item.length])
            except Exception as exc:  # reported by the writer; it must never wait for a buffer forever
                self.error = exc
            finally:
                self.release(item)


class TarWriter:
    """Write a tar to file descriptor ``fd`` and compute its sha256 on the way.

    Use as a context manager; call ``close()`` to finish the archive, which
    returns (size, sha256). Leaving the block early stops the hashing threads.
    """

    def __init__(self, fd, buffer_size=BUFFER_SIZE, buffers=BUFFERS, writeback=True):
        self.fd = fd
        self.size = 0
        self.writeback = writeback and hasattr(os, 'posix_fadvise')
        self.marks = [0, 0]
        self.pool = queue.Queue()
        for _index in range(max(2, buffers)):
            self.pool.put(bytearray(buffer_size))
        self.buffer_size = buffer_size
        self.lock = threading.Lock()
        self.hasher = _Hasher(self._release)
        self.hasher.start()
        self.file_hasher = None  # started for the first file to verify
        self.buf = None
        self.view = None
        self.pos = 0
        self.segments = []
        self.file_digests = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop()

    def _stop(self):
        for hasher in (self.hasher, self.file_hasher):
            if hasher is not None and hasher.is_alive():
                hasher.todo.put(None)
                hasher.join()

    def _release(self, item):
        with self.lock:
            item.pending -= 1
            done = not item.pending
        if done:
            self.pool.put(item.buf)

    def _check_hashers(self):
        for hasher in (self.hasher, self.file_hasher):
            if hasher is not None and hasher.error is not None:
                raise BundleWriteError('hashing the tar failed: %s' % hasher.error)

    # buffers

    def _room(self):
        if self.buf is None:
            self.buf = self.pool.get()
            self.view = memoryview(self.buf)
            self.pos = 0
            self.segments = []
        return self.buffer_size - self.pos

    def _flush(self):
        if self.buf is None:
            return
        self._check_hashers()
        done = 0
        while done < self.pos:
            done += os.write(self.fd, self.view[done:self.pos])
        item = _Filled(self.buf, self.pos, self.segments, 2 if self.segments else 1)
        if self.segments:
            if self.file_hasher is None:
                self.file_hasher = _Hasher(self._release, files=True)
                self.file_hasher.start()
            self.file_hasher.todo.put(item)
        self.hasher.todo.put(item)
        self.size += self.pos
        self.buf = self.view = None
        self.pos = 0
        if self.writeback and self.size - self.marks[1] >= WRITEBACK_EVERY:
            self._start_writeback()

    def _start_writeback(self):
        """Have the kernel write what we wrote so far, without waiting (POSIX_FADV_DONTNEED starts writeback of
        dirty pages and drops clean ones): the data reaches the disk while we copy, as it would with
        sync_file_range, and the tar does not crowd the page cache. The range repeats the previous one, whose
        pages are clean by now and so leave the cache."""
        try:
            os.posix_fadvise(self.fd, self.marks[0], self.size - self.marks[0], os.POSIX_FADV_DONTNEED)
        except OSError:  # a pipe or a file system without it: just write
            self.writeback = False
        self.marks = [self.marks[1], self.size]

    def _put(self, data):
        data = memoryview(data)
        while len(data):
            count = min(self._room(), len(data))
            self.view[self.pos:self.pos + count] = data[:count]
            self.pos += count
            data = data[count:]
            if self.pos == self.buffer_size:
                self._flush()

    # members

    def add_dir(self, name, mtime):
        self._put(header(name, 'dir', 0, mtime))

    def add_bytes(self, name, data, mtime):
        self._put(header(name, 'file', len(data), mtime))
        self._put(data)
        self._put(_padding(len(data)))

    def add_file(self, name, path, size, mtime, expect_stat=None, verify_sha256=None):
        """Stream ``size`` bytes of the regular file ``path``.

        ``expect_stat``: (size, mtime_ns) the file must have before and after
        it is read. ``verify_sha256``: compare the file's own sha256 with this
        at ``close()`` (then see ``mismatches``).
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
        except OSError as exc:
            raise BundleWriteError('%s: cannot open: %s' % (name, exc.strerror or exc))
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise BundleWriteError('%s: not a regular file' % name)
            _check_stat(name, before, size, expect_stat)
            if hasattr(os, 'posix_fadvise'):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            self._put(header(name, 'file', size, mtime))
            digest = None
            if verify_sha256 is not None:
                digest = hashlib.sha256()
                self.file_digests.append((name, verify_sha256, digest))
            left = size
            while left:
                room = self._room()
                want = min(room, left)
                got = os.readv(fd, [self.view[self.pos:self.pos + want]])
                if not got:
                    raise BundleWriteError('%s: shrank while it was being bundled' % name)
                if digest is not None:
                    self.segments.append((self.pos, self.pos + got, digest))
                self.pos += got
                left -= got
                if self.pos == self.buffer_size:
                    self._flush()
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise BundleWriteError('%s: changed while it was being bundled' % name)
        finally:
            os.close(fd)
        self._put(_padding(size))

    def close(self):
        """End the archive, wait for the hash; return (tar size, tar sha256)."""
        end = 2 * BLOCK + self.size + self.pos
        self._put(_NUL * (2 * BLOCK + (-end % RECORD)))
        self._flush()
        self._stop()
        self._check_hashers()
        return self.size, self.hasher.digest.hexdigest()

    @property
    def mismatches(self):
        """Names of files added with ``verify_sha256`` whose content has another sha256 (after close)."""
        return [name for name, wanted, digest in self.file_digests if digest.hexdigest() != wanted]


def _check_stat(name, st, size, expect_stat):
    if st.st_size != size:
        raise BundleWriteError('%s: %d bytes on disk, %d verified' % (name, st.st_size, size))
    if expect_stat is not None and (st.st_size, st.st_mtime_ns) != tuple(expect_stat):
        raise BundleWriteError('%s: changed since it was verified' % name)


# -- one model's tar --------------------------------------------------------


def model_tar_size(model):
    """Exact size of the tar ``write_model_tar`` makes for a manifest model entry."""
    mtime = model['created_at']
    return archive_size(member_size(name, 'dir' if kind == 'dir' else 'file', size, mtime)
                        for name, kind, size in bundle_format.tar_members(model))


def write_model_tar(model, source_dir, fd, stats=None, verify=False, buffer_size=BUFFER_SIZE, buffers=BUFFERS):
    """Write the tar of ``model`` (a manifest entry without tar fields) from ``source_dir`` to ``fd``.

    ``stats``: {path: (size, mtime_ns)} each file must still have (verify=none).
    ``verify``: hash each file on the way and fail when it differs from its
    recorded sha256. Returns (tar size, tar sha256).
    """
    mtime = model['created_at']
    metadata = dict(bundle_format.metadata_entries(model))
    files = dict((f['path'], f) for f in model['files'])
    with TarWriter(fd, buffer_size, buffers) as tar:
        for name, kind, size in bundle_format.tar_members(model):
            if kind == 'dir':
                tar.add_dir(name, mtime)
            elif kind == 'metadata':
                tar.add_bytes(name, metadata[name], mtime)
            else:
                tar.add_file(name, os.path.join(source_dir, *name.split('/')), size, mtime,
                             expect_stat=None if stats is None else stats[name],
                             verify_sha256=files[name]['sha256'] if verify else None)
        result = tar.close()
        bad = tar.mismatches
    if bad:
        raise BundleWriteError('%d file(s) differ from the sha256 recorded when they were verified: %s'
                               % (len(bad), _some(bad)))
    return result


def _some(items):
    shown = ', '.join(items[:PROBLEMS_SHOWN])
    return shown + (', ...' if len(items) > PROBLEMS_SHOWN else '')
