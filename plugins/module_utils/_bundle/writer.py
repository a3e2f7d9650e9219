# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write bundles (see bundle_format): deterministic tars, streamed and hashed in one pass.

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

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import queue
import re
import stat
import tempfile
import threading

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import scan
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import LAYOUTS, absolute, model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, lstat_or_none, read_bytes, require_space, space_ran_out, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import load_record
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import copy_mode, remove_tree, replace_dir

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile.RECORDSIZE, GNU tar's default blocking factor
BUFFER_SIZE = 8 * 1024 * 1024
BUFFERS = 4
# Start writeback of the tar every so many bytes, so the fsync before the rename finds little left to do.
WRITEBACK_EVERY = 64 * 1024 * 1024
REGTYPE, DIRTYPE, XHDTYPE = b'0', b'5', b'x'
_NUL = b'\0'
_PAX_NAME = '././@PaxHeader'
# Source layouts tried by layout=auto, best first; 'models' is also the directory of 'all'.
AUTO_ORDER = ('models', 'snapshots', 'hub')
# Leftovers of an interrupted run: temp tars, manifests and sums (.<name>.<random>.tmp).
_TEMP = re.compile(r'^\..+\.tmp\Z')
# Where earlier releases kept the lock: inside the bundle, where a static file server would hand it out.
LEGACY_LOCK = '.lock'
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


class _Filled(object):
    """A buffer handed to the hashing threads: the first ``length`` bytes are tar stream."""

    def __init__(self, buf, length, segments, pending):
        self.buf = buf
        self.length = length
        self.segments = segments  # [(start, end, file digest)]
        self.pending = pending    # hashing threads still to see it


class _Hasher(threading.Thread):
    """Takes filled buffers in order; ``files`` hashes the file segments, else the whole stream."""

    def __init__(self, release, files=False):
        super(_Hasher, self).__init__(name='bundle-hash-files' if files else 'bundle-hash-stream')
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


class TarWriter(object):
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


# -- where a model comes from -----------------------------------------------


class Source(object):
    """A recorded model directory of a cache: its layout, path and verification record."""

    def __init__(self, root, layout, rel, record):
        self.root = root
        self.layout = layout
        self.rel = rel
        self.dir = absolute(root, rel)
        self.record = record


def _record_for(root, rel):
    return load_record(root, rel)


def find_source(root, model_id, revision, layout='auto'):
    """The directory to bundle ``model_id``@``revision`` from; raises BundleWriteError saying why none fits."""
    label = '%s@%s' % (model_id, revision)
    tried = AUTO_ORDER if layout == 'auto' else (layout,)
    problems = []
    for candidate in tried:
        rel = model_dir(candidate, model_id, revision)
        record = _record_for(root, rel)
        if record.files and record.data.get('model') == model_id and record.data.get('revision') == revision:
            recorded = record.data.get('layout')
            if candidate in ('models', 'all') and recorded in ('models', 'all'):
                candidate = recorded
            return Source(root, candidate, rel, record)
        if record.files and record.data.get('model') == model_id:
            problems.append('%s holds revision %r' % (rel, record.data.get('revision')))
        elif os.path.isdir(absolute(root, rel)):
            problems.append('%s has no verification record (downloaded by the SDK itself or copied by hand?)' % rel)
    if not problems:
        raise BundleWriteError('%s: not found in %s (looked in %s)' % (
            label, root, ', '.join(model_dir(c, model_id, revision) for c in tried)))
    raise BundleWriteError(
        '%s: %s. Run modelseed.fleet.modelscope_model for %s with this cache_dir first: it adopts files already '
        'in place after checking their sha256 against the hub, and records them' % (label, '; '.join(problems), label))


def discover(root, layout='auto'):
    """([(model id, revision)], [warning]) of every model of a cache with a record and all its recorded files."""
    wanted, warnings = [], []
    for found in scan(root):
        where = '%s (%s)' % (found['id'], found['path'])
        if layout != 'auto' and found['layout'] not in _same_dir(layout):
            continue
        if found['layout'] not in LAYOUTS:
            warnings.append('skipped %s: a %s layout this module does not read' % (where, found['layout']))
        elif not found['recorded']:
            warnings.append('skipped %s: no verification record; run modelseed.fleet.modelscope_model for it' % where)
        elif found['missing'] or found['size_mismatch']:
            # Complete as far as the bundle is concerned: its SDK metadata is generated, not copied.
            warnings.append('skipped %s: incomplete (%d file(s) missing, %d of another size than verified)' % (
                where, len(found['missing']), len(found['size_mismatch'])))
        elif (found['id'], found['revision']) not in wanted:
            wanted.append((found['id'], found['revision']))
    return sorted(wanted), warnings


def _same_dir(layout):
    return ('models', 'all') if layout in ('models', 'all') else (layout,)


def manifest_entry(model_id, revision, source):
    """The manifest entry for a recorded source, without tar_size and tar_sha256; validated."""
    data = source.record.data
    label = '%s@%s' % (model_id, revision)
    commit, created_at = data.get('commit'), data.get('created_at')
    if not isinstance(commit, str) or not commit or not isinstance(created_at, int) or isinstance(created_at, bool):
        raise BundleWriteError('%s: the record of %s has no commit or commit time; run modelseed.fleet.modelscope_model '
                               'for it again' % (label, source.rel))
    files = []
    for path, entry in sorted(source.record.files.items()):
        if not isinstance(entry, dict):
            raise BundleWriteError('%s: the record of %s is malformed at %r' % (label, source.rel, path))
        files.append({'path': path, 'size': entry.get('size'), 'sha256': entry.get('sha256'),
                      'revision': entry.get('revision') if entry.get('revision') is not None else ''})
    model = {
        'id': model_id, 'revision': revision, 'commit': commit, 'created_at': created_at,
        'source_layout': source.layout, 'tar': bundle_format.tar_name(model_id, revision),
        'bytes': sum(f['size'] for f in files if isinstance(f['size'], int)), 'files': files,
    }
    try:
        model['metadata'] = bundle_format.metadata_list(model)
        bundle_format.validate_model(dict(model, tar_size=0, tar_sha256='0' * 64))
    except (BundleError, TypeError, ValueError) as exc:
        raise BundleWriteError('%s: the record of %s cannot be bundled: %s' % (label, source.rel, exc))
    return model


def stale_files(model, source):
    """Files of ``model`` whose stat no longer matches the record: [(path, why)]."""
    problems = []
    for entry in model['files']:
        try:
            st = os.lstat(os.path.join(source.dir, *entry['path'].split('/')))
        except (FileNotFoundError, NotADirectoryError):
            problems.append((entry['path'], 'missing'))
            continue
        recorded = source.record.files[entry['path']]
        if not stat.S_ISREG(st.st_mode):
            problems.append((entry['path'], 'not a regular file'))
        elif st.st_size != entry['size']:
            problems.append((entry['path'], 'size changed'))
        elif st.st_mtime_ns != recorded.get('mtime_ns'):
            problems.append((entry['path'], 'modified'))
    return problems


def hash_mismatches(model, source, workers=2):
    """Paths of ``model`` whose sha256 on disk is not the recorded one (missing files included)."""
    digests = sha256_files([os.path.join(source.dir, *f['path'].split('/')) for f in model['files']], workers)
    return [f['path'] for f, got in zip(model['files'], digests) if got != f['sha256']]


# -- the bundle directory ---------------------------------------------------


def _key(model):
    """What the tar's bytes depend on."""
    return dict((k, v) for k, v in model.items() if k not in ('source_layout', 'tar_size', 'tar_sha256'))


def read_old_manifest(dest):
    """({(id, revision): entry}, problem or None) of the bundle already in ``dest``."""
    data = read_bytes(os.path.join(dest, bundle_format.MANIFEST))
    if data is None:
        return {}, None
    try:
        doc = bundle_format.parse_manifest(data)
    except BundleError as exc:
        return {}, 'the existing %s is unusable (%s)' % (bundle_format.MANIFEST, exc)
    return dict(((m['id'], m['revision']), m) for m in doc['models']), None


def lock_path(dest):
    """The lock of the runs that write ``dest``: beside it, so the bundle directory holds only the bundle and a
    swap of the whole directory leaves the lock where it is. A parent nobody may write puts it in the temp
    directory, named after ``dest``."""
    parent, name = os.path.split(dest)
    if os.access(parent, os.W_OK | os.X_OK):
        return os.path.join(parent, '.%s.lock' % name)
    digest = hashlib.sha256(os.path.realpath(dest).encode('utf-8', 'surrogateescape')).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), 'modelseed-bundle-%s.lock' % digest)


def _tar_size_on_disk(dest, name):
    try:
        st = os.lstat(os.path.join(dest, name))
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class BundlePlan(object):
    """What a run would do to ``dest``: models to write or reuse, files to prune, why."""

    def __init__(self, dest, entries, prune=True):
        """``entries``: [(manifest entry without tar fields, Source)]."""
        self.dest = dest
        self.old, problem = read_old_manifest(dest)
        self.reasons = {}
        self.notes = [problem] if problem else []
        self.write = []     # (entry, source) whose tar is (re)written
        self.models = []    # every entry, tar fields filled when known
        self.sources = {}
        for entry, source in sorted(entries, key=lambda item: (item[0]['id'], item[0]['revision'])):
            key = (entry['id'], entry['revision'])
            self.sources[key] = source
            old = self.old.get(key)
            reason = self._reason(entry, old)
            if reason:
                self.reasons.setdefault(reason, []).append(key)
            if reason in (None, 'source layout changed'):
                entry = dict(entry, tar_size=old['tar_size'], tar_sha256=old['tar_sha256'])
            else:
                entry = dict(entry, tar_size=model_tar_size(entry), tar_sha256=None)
                self.write.append(entry)
            self.models.append(entry)
        keys = set((m['id'], m['revision']) for m in self.models)
        removed = sorted(k for k in self.old if k not in keys)
        if removed:
            self.reasons['removed'] = removed
        names = set(m['tar'] for m in self.models)
        self.prune = sorted(n for n in _listdir(dest) if prune and n.endswith('.tar') and not n.startswith('.')
                            and n not in names and _tar_size_on_disk(dest, n) is not None)
        self.temp = sorted(n for n in _listdir(dest) if _TEMP.match(n))

    def _reason(self, entry, old):
        if old is None:
            return 'new'
        if old['commit'] != entry['commit']:
            return 'changed commit'
        if _key(old) != _key(entry):
            return 'changed files'
        if _tar_size_on_disk(self.dest, old['tar']) != old['tar_size']:
            return 'tar missing or of another size'
        if old.get('source_layout') != entry['source_layout']:
            return 'source layout changed'
        return None

    def manifest(self):
        return bundle_format.manifest_bytes(self.models)

    def sums(self, manifest):
        entries = [(hashlib.sha256(manifest).hexdigest(), bundle_format.MANIFEST)]
        entries.extend((m['tar_sha256'], m['tar']) for m in self.models)
        return bundle_format.sums_bytes(entries)

    @property
    def changed(self):
        if self.write or self.prune:
            return True
        manifest = self.manifest()
        return (read_bytes(os.path.join(self.dest, bundle_format.MANIFEST)) != manifest
                or read_bytes(os.path.join(self.dest, bundle_format.SUMS)) != self.sums(manifest))

    def reason_list(self):
        parts = []
        for reason in ('new', 'changed commit', 'changed files', 'tar missing or of another size', 'source layout changed', 'removed'):
            if self.reasons.get(reason):
                parts.append('%d model(s) %s' % (len(self.reasons[reason]), reason))
        if self.prune:
            parts.append('%d stale tar(s) to remove' % len(self.prune))
        parts.extend(self.notes)
        return parts

    def remove_leftovers(self):
        """Delete what interrupted runs left: temp files and directories in dest and beside it (call with the lock held)."""
        for name in self.temp:
            remove_tree(os.path.join(self.dest, name))
        legacy = os.path.join(self.dest, LEGACY_LOCK)
        st = lstat_or_none(legacy)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:
            unlink(legacy)
        parent, prefix = os.path.split(self.dest)
        for name in _listdir(parent):
            if name.startswith('.%s.' % prefix) and _TEMP.match(name):
                remove_tree(os.path.join(parent, name))

    def bytes_to_write(self):
        return sum(m['tar_size'] for m in self.write)

    def apply(self, verify='none', buffer_size=BUFFER_SIZE, buffers=BUFFERS):
        """Write the new tars, manifest.json and SHA256SUMS into a new directory beside dest, give it hard links to
        everything else dest holds (but pruned tars) and swap the two directories in one step: a reader, or a run
        killed at any moment, finds the whole previous bundle or the whole new one.

        Where dest cannot be swapped (its parent is not writable, another filesystem, subdirectories, no hard
        links), the new files are written in a directory inside dest and renamed into place one after another,
        everything written and synced before the first rename.
        """
        require_space(self.dest, self.bytes_to_write(), 'to write the tars')
        parent = os.path.dirname(self.dest)
        beside = _swappable(self.dest)
        work = tempfile.mkdtemp(prefix='.%s.' % os.path.basename(self.dest) if beside else '.new.', suffix='.tmp',
                                dir=parent if beside else self.dest)
        try:
            names = self._write_all(work, verify, buffer_size, buffers)
            if beside and _link_rest(self.dest, work, set(names) | set(self.prune)):
                copy_mode(self.dest, work)
                _fsync_dir(work)
                # aside: where dest goes on kernels that cannot exchange, a name the next run also cleans up
                old = replace_dir(work, self.dest, work[:-len('.tmp')] + '-old.tmp')
                _fsync_dir(parent)
                remove_tree(old)
            else:
                for name in names:
                    os.rename(os.path.join(work, name), os.path.join(self.dest, name))
                for name in self.prune:
                    unlink(os.path.join(self.dest, name))
                _fsync_dir(self.dest)
        except OSError as exc:
            # The new files go (finally), the bundle stays as it was.
            full = space_ran_out(exc, self.dest, self.bytes_to_write(), 'writing the tars', 'the partial tars were')
            if full is None:
                raise
            raise full
        finally:
            remove_tree(work)

    def _write_all(self, directory, verify, buffer_size, buffers):
        """Write the new tars, then manifest.json and SHA256SUMS, into ``directory``, synced; return their names."""
        names = []
        for entry in self.write:
            source = self.sources[(entry['id'], entry['revision'])]
            self._write_one(entry, source, os.path.join(directory, entry['tar']), verify, buffer_size, buffers)
            names.append(entry['tar'])
        manifest = self.manifest()
        for name, data in ((bundle_format.MANIFEST, manifest), (bundle_format.SUMS, self.sums(manifest))):
            atomic_write(os.path.join(directory, name), data, bundle_format.FILE_MODE)
            names.append(name)
        return names

    def _write_one(self, entry, source, path, verify, buffer_size, buffers):
        label = '%s@%s' % (entry['id'], entry['revision'])
        stats = None
        if verify != 'full':
            stats = dict((p, (e['size'], e.get('mtime_ns'))) for p, e in source.record.files.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, bundle_format.FILE_MODE)
        try:
            size, digest = write_model_tar(entry, source.dir, fd, stats=stats, verify=verify == 'full',
                                           buffer_size=buffer_size, buffers=buffers)
            os.fsync(fd)
        except BundleWriteError as exc:
            raise BundleWriteError('%s (%s): %s' % (label, source.dir, exc))
        finally:
            os.close(fd)
        os.chmod(path, bundle_format.FILE_MODE)
        if size != entry['tar_size']:
            raise BundleWriteError('%s: wrote %d bytes, expected %d' % (label, size, entry['tar_size']))
        entry['tar_sha256'] = digest


def _swappable(dest):
    """True when a directory beside ``dest`` can take its place: same filesystem, writable parent, no subdirectory."""
    parent = os.path.dirname(dest)
    try:
        if os.path.islink(dest) or os.stat(parent).st_dev != os.stat(dest).st_dev or not os.access(parent, os.W_OK | os.X_OK):
            return False
        return not any(os.path.isdir(os.path.join(dest, n)) and not os.path.islink(os.path.join(dest, n)) for n in os.listdir(dest))
    except OSError:
        return False


def _link_rest(dest, work, replaced):
    """Hard-link into ``work`` every entry of ``dest`` not in ``replaced`` (nor a temp file); False if links fail."""
    try:
        for name in _listdir(dest):
            if name not in replaced and not _TEMP.match(name):
                os.link(os.path.join(dest, name), os.path.join(work, name), follow_symlinks=False)
    except OSError:
        return False
    return True


def _listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
