# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the models of a bundle into a cache root, atomically per model.

For each model of the bundle (``<key>`` is its model directory, quoted, see records.state_path):

1. its tar is streamed into ``.modelseed/incoming/<key>/`` (same filesystem as the cache), every
   member checked on the way (bundle_reader); the SDK metadata of the TARGET layout is written
   beside the files, ownership and modes applied, and the new record saved as
   ``incoming/<key>.install`` with the staged directory's inode;
2. only when every model of the bundle is staged, each one moves into place: a new model with one
   rename, an existing one with ``renameat2(RENAME_EXCHANGE)`` so the directory is at every moment
   entirely old or entirely new (rename aside, then into place, where the kernel lacks it);
3. the pending record is renamed over ``records/<key>.json``, alias links are made, and the old
   copy goes to ``.modelseed/trash/`` and is deleted.

With ``sync`` (the default) every staged file and directory and the pending record are on disk before
the swap, and the swap before the record (durable.py, swap.swap_in): after a power failure, too, each
model is the old or the new one, and no record calls a file verified that does not hold its bytes.

A run killed anywhere leaves each model old or new. The next run finishes the job: a pending
record whose inode is the model directory's is promoted (the swap happened), any other one is
dropped together with its staging directory, and the trash is emptied.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import posixpath
import stat
import tempfile
from urllib.parse import quote, unquote

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs, start_writeback, sync_tree
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import (
    METADATA_LAYOUTS, absolute, alias_links, model_dir)
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock, LockTimeout
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import (
    lstat_or_none, makedirs, parent_dirs, read_bytes, readlink_or_none, require_space, unlink)
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import STATE_DIR, Record, state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.swap import (
    PENDING_SUFFIX, discard, exchange, recover_pending, remove_temps, remove_tree, save_pending, swap_in)

LINK_SUFFIX = '.modelseed-link'
# Scratch directories SDKs up to 1.37 create while loading, even offline, per layout.
RUNTIME_DIRS = {
    'hub': ('.lock', 'hub/._____temp'),
    'models': ('.lock', 'models/._____temp'),
    'all': ('.lock', 'models/._____temp', 'hub/._____temp'),
    'snapshots': ('.lock',),
}
# Where the records and locks of the models live: the models' owner and dir_mode apply to them too.
STATE_DIRS = (STATE_DIR, STATE_DIR + '/records', STATE_DIR + '/incoming', STATE_DIR + '/locks')


class InstallError(Exception):
    pass


# -- ownership and modes -----------------------------------------------------------


class Perms(object):
    """Who owns what is installed and with which modes.

    ``uid``/``gid`` None leave ownership to the running user. ``file_mode``/``dir_mode`` apply to
    everything written for a model: its files, its SDK metadata, its record, its lock, the directories
    above it and above its layout links, and the state directories. ``shared`` makes every directory
    setgid, so what SDKs create below inherits the group, makes ``.mdl``/``.mv`` group-writable
    (SDKs up to 1.37 rewrite them on every load) and the scratch directories SDKs write into
    group-writable. Nothing is ever world-writable: ``.mdl`` is a pickle every SDK process loads.
    """

    def __init__(self, uid=None, gid=None, file_mode=0o644, dir_mode=0o755, shared=False):
        self.uid = uid
        self.gid = gid
        self.shared = shared
        setgid = stat.S_ISGID if shared else 0
        self.file = file_mode
        self.dir = dir_mode | setgid
        self.writable_metadata = file_mode | (0o060 if shared else 0)
        self.shared_dir = (dir_mode | 0o070 | stat.S_ISGID) & ~0o002

    def file_mode(self, rel):
        if rel in (sdk_metadata.MDL, sdk_metadata.MV):
            return self.writable_metadata
        return self.file

    def owner_ok(self, st):
        return (self.uid is None or st.st_uid == self.uid) and (self.gid is None or st.st_gid == self.gid)

    def ok(self, st, mode):
        return self.owner_ok(st) and stat.S_IMODE(st.st_mode) == mode

    def chown(self, path, follow=True):
        if self.uid is not None or self.gid is not None:
            uid = -1 if self.uid is None else self.uid
            gid = -1 if self.gid is None else self.gid
            if follow:
                os.chown(path, uid, gid)
            else:
                os.lchown(path, uid, gid)

    def apply(self, path, mode):
        """chown, then chmod (a chown clears setgid bits)."""
        self.chown(path)
        os.chmod(path, mode)

    def apply_fd(self, fd, mode):
        if self.uid is not None or self.gid is not None:
            os.fchown(fd, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)
        os.fchmod(fd, mode)


def write_file(path, data, perms, mode, mtime, sync=True):
    """Write ``data`` beside ``path`` with its final owner, mode and mtime, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            perms.apply_fd(handle.fileno(), mode)
            os.utime(handle.fileno(), ns=(mtime * 1000000000, mtime * 1000000000))
            if sync:
                os.fsync(handle.fileno())
        os.rename(tmp, path)
        if sync:
            fsync_dirs(os.path.dirname(path))
    except BaseException:
        unlink(tmp)
        raise


def ensure_dirs(root, rel, perms, mode=None):
    """Make the directories of ``rel`` below ``root``, refusing to go through a symlink: a user who
    may write in the cache must not be able to redirect an install elsewhere."""
    path = root
    for part in rel.split('/') if rel else []:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            else:
                perms.apply(path, perms.dir if mode is None else mode)
            st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise InstallError('%s is not a directory (%s): refusing to install through it' % (
                path, 'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'a file'))
    return path


# -- staging -----------------------------------------------------------------------


# With sync, writing to disk starts every this many bytes, while the tar is still being read and hashed.
WRITEBACK_CHUNK = 8 << 20


class _Out(object):
    def __init__(self, fd, sync=False):
        self.fd = fd
        self.sync = sync
        self.written = 0
        self.started = 0

    def write(self, view):
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n
        if self.sync and self.written - self.started >= WRITEBACK_CHUNK:
            start_writeback(self.fd, self.started, self.written - self.started)
            self.started = self.written

    def close(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class StagingSink(object):
    """Where bundle_reader writes one model: a fresh private directory, nothing followed."""

    def __init__(self, top, perms, sync=True):
        self.top = top
        self.perms = perms
        self.sync = sync
        self.dirs = set()
        self._open = set()

    def create(self):
        remove_tree(self.top)
        makedirs(os.path.dirname(self.top))
        os.mkdir(self.top, 0o700)

    def directory(self, rel):
        path = self.top
        parts = rel.split('/')
        for index, part in enumerate(parts):
            path = os.path.join(path, part)
            sub = '/'.join(parts[:index + 1])
            if sub not in self.dirs:
                os.mkdir(path, 0o700)
                self.dirs.add(sub)
        return path

    def open_file(self, rel, size):
        parent = rel.rsplit('/', 1)[0] if '/' in rel else ''
        if parent:
            self.directory(parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
        handle = _Out(os.open(join(self.top, rel), flags, 0o600), self.sync)
        self._open.add(handle)
        return handle

    def close_file(self, handle, rel, mtime):
        """Runs on the reader's worker thread, after the member's last write."""
        try:
            self.perms.apply_fd(handle.fd, self.perms.file_mode(rel))
            os.utime(handle.fd, ns=(int(mtime) * 1000000000, int(mtime) * 1000000000))
            if self.sync:
                start_writeback(handle.fd, handle.started)  # the tail; the fsync before the swap then waits for little
            return os.fstat(handle.fd)
        finally:
            handle.close()
            self._open.discard(handle)

    def discard(self, handle, rel):
        handle.close()
        self._open.discard(handle)
        unlink(join(self.top, rel))

    def abort(self):
        for handle in list(self._open):
            handle.close()
        self._open.clear()

    def write_metadata(self, name, data, mtime):
        path = os.path.join(self.top, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            self.perms.apply_fd(handle.fileno(), self.perms.file_mode(name))
            os.utime(handle.fileno(), ns=(mtime * 1000000000, mtime * 1000000000))

    def finish(self):
        """Modes and owners of the directories, deepest first, the model directory last."""
        for rel in sorted(self.dirs, key=lambda d: -d.count('/')):
            self.perms.apply(join(self.top, rel), self.perms.dir)
        self.perms.apply(self.top, self.perms.dir)


# -- one model ---------------------------------------------------------------------


class Plan(object):
    """What a model needs: 'install' (absent), 'replace' (differs), 'fix' (metadata, links,
    ownership or record only), 'none'; ``reasons`` say why."""

    def __init__(self, action, reasons=None, metadata=None, links=None, perms=None, record=False):
        self.action = action
        self.reasons = reasons or []
        self.metadata = metadata or []
        self.links = links or []
        self.perms = perms or []
        self.record = record


class ModelInstall(object):
    def __init__(self, root, layout, model, sync=True):
        self.root = root
        self.layout = layout
        self.model = model
        self.sync = sync
        self.label = bundle_format.model_label(model)
        self.rel = model_dir(layout, model['id'], model['revision'])
        self.dir = absolute(root, self.rel)
        self.record_path = state_path(root, 'records', self.rel, '.json')
        self.staging = state_path(root, 'incoming', self.rel)
        self.pending_path = state_path(root, 'incoming', self.rel, PENDING_SUFFIX)
        self.lock_path = state_path(root, 'locks', self.rel, '.lock')
        self.plan = None
        self.staged = None

    @property
    def files(self):
        return self.model['files']

    def wanted_metadata(self):
        if self.layout not in METADATA_LAYOUTS:
            return {}
        return dict(bundle_format.metadata_entries(self.model))

    def facts(self):
        m = self.model
        return dict(model=m['id'], revision=m['revision'], commit=m['commit'], created_at=m['created_at'],
                    layout=self.layout, path=self.rel, tar_sha256=m['tar_sha256'], source='bundle')

    def installed_facts(self):
        """Facts of the record of what is installed now, or None."""
        record = Record.load(self.record_path)
        return record.data if record.files and os.path.lexists(self.dir) else None

    # -- deciding ------------------------------------------------------------

    def decide(self, perms, verify='quick', workers=4):
        self.plan = self._decide(perms, verify, workers)
        return self.plan

    def _decide(self, perms, verify, workers):
        try:
            top = os.lstat(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return Plan('install', ['new to this cache'])
        if not stat.S_ISDIR(top.st_mode):
            return Plan('replace', ['%s is not a directory' % self.rel])
        record = Record.load(self.record_path)
        facts = record.data
        m = self.model
        if not record.files:
            return Plan('replace', ['no record of a verified install'])
        other = ''
        if facts.get('commit') != m['commit']:
            other = 'installed commit %s, the bundle has %s' % (str(facts.get('commit'))[:12], m['commit'][:12])
        if set(record.files) != set(f['path'] for f in self.files):
            return Plan('replace', [(other + ', with other files') if other else 'the installed file list differs from the bundle'])
        changed, wrong_perms = [], []
        for f in self.files:
            path = join(self.dir, f['path'])
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is None or not stat.S_ISREG(st.st_mode) or not record.matches(f['path'], f['size'], f['sha256'], st):
                changed.append(f['path'])
            elif not perms.ok(st, perms.file):
                wrong_perms.append(path)
        if changed:
            if other:
                return Plan('replace', [other])
            return Plan('replace', ['%d file(s) missing or changed since installed, for example %s' % (len(changed), changed[0])])
        if verify == 'full':
            corrupt = self._corrupt(workers)
            if corrupt:
                return Plan('replace', ['%d file(s) differ from the bundle (verify=full), for example %s' % (len(corrupt), corrupt[0])])
        for rel in sorted(parent_dirs(f['path'] for f in self.files)):
            st = lstat_or_none(join(self.dir, rel))
            if st is None or not stat.S_ISDIR(st.st_mode):
                return Plan('replace', ['directory %s is missing' % rel])
            if not perms.ok(st, perms.dir):
                wrong_perms.append(join(self.dir, rel))
        if not perms.ok(top, perms.dir):
            wrong_perms.append(self.dir)
        stale_metadata = []
        for name, data in sorted(self.wanted_metadata().items()):
            path = os.path.join(self.dir, name)
            st = lstat_or_none(path)
            if st is None or not stat.S_ISREG(st.st_mode) or not sdk_metadata.same_content(name, read_bytes(path), data):
                stale_metadata.append(name)
            elif not perms.ok(st, perms.file_mode(name)):
                wrong_perms.append(path)
        links = [(link, target) for link, target in alias_links(self.layout, m['id'])
                 if readlink_or_none(absolute(self.root, link)) != target]
        wrong_perms.extend(self._wrong_perms_around(perms))
        wanted = self.facts()
        record_stale = any(facts.get(key) != value for key, value in wanted.items()) or any(
            record.files[f['path']].get('revision') != f['revision'] for f in self.files)
        # Every file is recorded as verified with the bundle's sha256: other facts only need the record
        # (and metadata) brought up to date, never gigabytes extracted again.
        reasons = []
        if other:
            reasons.append(other + ', with the same files')
        elif facts.get('tar_sha256') != m['tar_sha256']:
            reasons.append('recorded from %s, with the same files' % ('another bundle' if facts.get('tar_sha256') else 'a download'))
        if stale_metadata:
            reasons.append('SDK metadata %s missing or outdated' % ', '.join(stale_metadata))
        if links:
            reasons.append('%d layout link(s) missing' % len(links))
        if wrong_perms:
            reasons.append('ownership or modes differ on %d path(s)' % len(wrong_perms))
        if record_stale and not reasons:
            reasons.append('record outdated')
        if reasons or record_stale:
            return Plan('fix', reasons, metadata=stale_metadata, links=links, perms=wrong_perms, record=record_stale)
        return Plan('none')

    def _wrong_perms_around(self, perms):
        """The record and the directories between the cache root and the model or its links, where owner or mode differ."""
        paths = []
        st = lstat_or_none(self.record_path)
        if st is not None and stat.S_ISREG(st.st_mode) and not perms.ok(st, perms.file):
            paths.append(self.record_path)
        for rel in sorted(above(self.layout, self.rel, self.model['id'])):
            path = absolute(self.root, rel)
            st = lstat_or_none(path)
            if st is not None and stat.S_ISDIR(st.st_mode) and not perms.ok(st, perms.dir):
                paths.append(path)
        return paths

    def _corrupt(self, workers):
        digests = sha256_files([join(self.dir, f['path']) for f in self.files], workers)
        return [f['path'] for f, digest in zip(self.files, digests) if digest != f['sha256']]

    # -- recovering ----------------------------------------------------------

    def recover(self):
        """Finish or drop what a killed run left; call with the model's lock held."""
        recover_pending(self.root, self.rel)
        key = quote(self.rel, safe='')
        remove_temps(os.path.join(self.root, STATE_DIR, 'records'), '.%s.' % key)
        listed = set(f['path'] for f in self.files)
        for name in sdk_metadata.METADATA_FILES:
            remove_temps(self.dir, '.%s.' % name, keep=listed)
        for pair in alias_links(self.layout, self.model['id']):
            unlink(absolute(self.root, pair[0]) + LINK_SUFFIX)

    # -- applying ------------------------------------------------------------

    def stage(self, bundle, perms, buffer_size=None):
        """Stream, verify and stage the model with its metadata and pending record; returns bytes."""
        sink = StagingSink(self.staging, perms, self.sync)
        sink.create()
        try:
            kwargs = {'buffer_size': buffer_size} if buffer_size else {}
            stats = bundle.extract(self.model, sink, **kwargs)
            for name, data in sorted(self.wanted_metadata().items()):
                sink.write_metadata(name, data, self.model['created_at'])
            sink.finish()
            if self.sync:
                sync_tree(self.staging)
            record = Record(self.pending_path)
            for f in self.files:
                record.put(f['path'], f['size'], f['sha256'], f['revision'], stats[f['path']])
            save_pending(self.root, self.rel, record, self.staging, self.sync, **self.facts())
            perms.apply(self.pending_path, perms.file)  # the record is the model's metadata too
        except BaseException:
            self.unstage()
            raise
        self.staged = True
        return self.model['bytes']

    def unstage(self):
        unlink(self.pending_path)
        remove_tree(self.staging)
        self.staged = None

    def commit(self, perms):
        """Move the staged model into place, promote its record, make its links, drop the old copy."""
        ensure_dirs(self.root, posixpath.dirname(self.rel), perms)
        old = swap_in(self.root, self.rel, self.staging, self.record_path, self.sync)
        self.make_links(perms, alias_links(self.layout, self.model['id']))
        if old is not None:
            discard(self.root, self.rel, old)
        self.staged = None

    def fix(self, perms):
        plan = self.plan
        wanted = self.wanted_metadata()
        for name in plan.metadata:
            write_file(os.path.join(self.dir, name), wanted[name], perms, perms.file_mode(name), self.model['created_at'], self.sync)
        for path in plan.perms:
            if os.path.isdir(path) and not os.path.islink(path):
                perms.apply(path, perms.dir)
            else:
                perms.apply(path, perms.file_mode(os.path.relpath(path, self.dir).replace(os.sep, '/')))
        self.make_links(perms, plan.links)
        if plan.record:
            record = Record.load(self.record_path)
            for f in self.files:
                record.files[f['path']]['revision'] = f['revision']
            record.save(**self.facts())
            perms.apply(self.record_path, perms.file)
            if self.sync:
                fsync_dirs(os.path.dirname(self.record_path))

    def make_links(self, perms, links):
        for link, target in links:
            path = absolute(self.root, link)
            ensure_dirs(self.root, posixpath.dirname(link), perms)
            tmp = path + LINK_SUFFIX
            unlink(tmp)
            os.symlink(target, tmp)
            perms.chown(tmp, follow=False)
            if os.path.isdir(path) and not os.path.islink(path):
                # A real copy where the link belongs (an earlier install in another layout): swap, then drop it.
                if not exchange(tmp, path):
                    discard(self.root, link, path)
                    os.rename(tmp, path)
                else:
                    discard(self.root, link, tmp)
                Record(state_path(self.root, 'records', link, '.json')).remove()
            else:
                os.rename(tmp, path)
        if self.sync and links:
            fsync_dirs(*(os.path.dirname(absolute(self.root, link)) for link, _target in links))


def above(layout, rel, model_id):
    """Directories (relative) between the cache root and model directory ``rel`` or its layout links."""
    return parent_dirs([rel] + [link for link, _target in alias_links(layout, model_id)])


def pending_installs(root):
    """Model directories (relative) with a pending record left by a killed run."""
    top = os.path.join(root, STATE_DIR, 'incoming')
    try:
        names = os.listdir(top)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(unquote(n[:-len(PENDING_SUFFIX)]) for n in names if n.endswith(PENDING_SUFFIX))


def recorded_models(root, layout):
    """[(rel, Record)] of models recorded in ``layout`` whose record is where its facts say."""
    top = os.path.join(root, STATE_DIR, 'records')
    try:
        names = sorted(os.listdir(top))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if not name.endswith('.json'):
            continue
        record = Record.load(os.path.join(top, name))
        facts = record.data
        if facts.get('layout') != layout:
            continue
        try:
            rel = model_dir(layout, facts.get('model'), facts.get('revision'))
        except (InvalidName, ValueError, TypeError, AttributeError):
            continue
        if facts.get('path') == rel and quote(rel, safe='') + '.json' == name:
            found.append((rel, record))
    return found


def remove_model(root, layout, rel, model_id):
    """Delete a model directory (one rename away first), its layout links and its record."""
    for link, target in alias_links(layout, model_id):
        path = absolute(root, link)
        if os.path.islink(path) and os.readlink(path) == target:
            os.unlink(path)
    discard(root, rel, absolute(root, rel))
    Record(state_path(root, 'records', rel, '.json')).remove()


# -- the cache root ------------------------------------------------------------------


def runtime_dirs_to_fix(root, layout, perms):
    """[(relative dir, mode)] of the cache root and SDK scratch dirs whose owner or mode is not
    what ``perms`` asks for (only with ``shared``, or when an owner or group is set), and of the
    state directories there are."""
    wanted = []
    if perms.shared:
        wanted.append(('', perms.shared_dir))
        wanted.extend((rel, perms.shared_dir) for rel in RUNTIME_DIRS[layout])
    elif perms.uid is not None or perms.gid is not None:
        st = lstat_or_none(root)
        wanted.append(('', stat.S_IMODE(st.st_mode) if st else perms.dir))
    fix = []
    for rel, mode in wanted:
        st = lstat_or_none(absolute(root, rel) if rel else root)
        if st is None or not stat.S_ISDIR(st.st_mode) or not perms.ok(st, mode):
            fix.append((rel, mode))
    for rel in STATE_DIRS:  # missing ones are made by prepare_state_dirs
        st = lstat_or_none(absolute(root, rel))
        if st is not None and stat.S_ISDIR(st.st_mode) and not perms.ok(st, perms.dir):
            fix.append((rel, perms.dir))
    return fix


def prepare_state_dirs(root, perms):
    """Make the missing state directories with the owner and mode of the models' directories."""
    for rel in STATE_DIRS:
        ensure_dirs(root, rel, perms)


def fix_runtime_dirs(root, dirs, perms):
    for rel, mode in dirs:
        if not rel:
            perms.apply(root, mode)
            continue
        parent = os.path.dirname(rel)
        if parent:
            ensure_dirs(root, parent, perms)
        path = ensure_dirs(root, rel, perms, mode)
        perms.apply(path, mode)


def check_free_space(root, models):
    """Fail before writing when the filesystem of ``root`` cannot take the staged copies of ``models``."""
    if not models:
        return
    block = os.statvfs(root).f_frsize or 4096
    needed = 0
    inodes = 0
    for model in models:
        files = model['files']
        needed += sum((f['size'] + block - 1) // block * block for f in files)
        dirs = len(parent_dirs(f['path'] for f in files)) + 1
        needed += (dirs + len(bundle_format.metadata_entries(model))) * block
        inodes += len(files) + dirs + 3
    needed += sum(len(json.dumps(model['files'])) for model in models)  # records, roughly
    require_space(root, needed, 'to install %s (the old copies stay in place until every model is verified)' % (
        ', '.join(bundle_format.model_label(m) for m in models)), inodes)


class Locks(object):
    """flocks of several models at once, taken in a fixed order; with ``perms``, the lock files get
    the owner and file mode of the models."""

    def __init__(self, paths, timeout, perms=None):
        self.paths = sorted(set(paths))
        self.timeout = timeout
        self.perms = perms
        self._held = []

    def __enter__(self):
        try:
            for path in self.paths:
                lock = FileLock(path, self.timeout)
                lock.__enter__()
                self._held.append(lock)
                if self.perms is not None and not self.perms.ok(os.fstat(lock.fileno()), self.perms.file):
                    self.perms.apply_fd(lock.fileno(), self.perms.file)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        while self._held:
            self._held.pop().__exit__(None, None, None)


__all__ = ['InstallError', 'LockTimeout', 'Perms', 'ModelInstall', 'Locks']
