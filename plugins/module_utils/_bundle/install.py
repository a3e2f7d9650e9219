# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the models of a bundle into a cache root, atomically per model.

Each model's tar is streamed into the model's staging directory (state.py, on the cache's filesystem),
every member checked on the way (tar_reader.py); the SDK metadata of the TARGET layout is written beside the
files, owners and modes applied, and the staging sealed with its pending record. Only when every model of
the bundle is staged does each one swap into place (``ModelState.swap_in``): a run killed anywhere leaves
each model old or new, and the next run finishes the job (``ModelState.recover``). With ``sync`` (the
default) everything staged is on disk before the swap, and the swap before the record (durable.py).
"""


import json
import os
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import delta, model_signatures
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import METADATA_LAYOUTS, absolute
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.perms import CacheError, Perms, ensure_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import STATE_DIRS, ModelState
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import start_writeback
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock, LockTimeout
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import lstat_or_none, makedirs, parent_dirs, require_space, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import remove_tree

# Scratch directories SDKs up to 1.37 create while loading, even offline, per layout.
RUNTIME_DIRS = {
    'hub': ('.lock', 'hub/._____temp'),
    'models': ('.lock', 'models/._____temp'),
    'all': ('.lock', 'models/._____temp', 'hub/._____temp'),
    'snapshots': ('.lock',),
}


# What an install refuses (a directory on the way that is a link, say) is a CacheError like any other.
InstallError = CacheError


# -- staging -----------------------------------------------------------------------


# With sync, writing to disk starts every this many bytes, while the tar is still being read and hashed.
WRITEBACK_CHUNK = 8 << 20


class _Out:
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


class StagingSink:
    """Where tar_reader writes one model: a fresh private directory, nothing followed."""

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

    def adopt(self, rel, path, how, mtime, check):
        """Rename (``how`` 'move') or hard-link ('link') the verified file ``path`` to ``rel``; ``check(lstat)`` refuses
        any other inode there before it gets the model's owner, mode and time."""
        parent = rel.rsplit('/', 1)[0] if '/' in rel else ''
        if parent:
            self.directory(parent)
        target = join(self.top, rel)
        if how == 'move':
            os.rename(path, target)
        else:
            os.link(path, target, follow_symlinks=False)
        check(os.lstat(target))
        self.perms.apply(target, self.perms.file_mode(rel))
        os.utime(target, ns=(int(mtime) * 1000000000, int(mtime) * 1000000000), follow_symlinks=False)

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


class InstallPlan:
    """What a model needs: 'install' (absent), 'replace' (differs), 'fix' (metadata, links,
    ownership or record only), 'none'; ``reasons`` say why."""

    def __init__(self, action, reasons=None, metadata=None, links=None, perms=None, record=False):
        self.action = action
        self.reasons = reasons or []
        self.metadata = metadata or []
        self.links = links or []
        self.perms = perms or []
        self.record = record
        self.signature = False  # the model-signing signature beside the model is to be (re)written


class ModelInstall(ModelState):
    """One model of a bundle and the directory it goes to in a cache."""

    def __init__(self, root, layout, model, sync=True, perms=None):
        ModelState.__init__(self, root, layout, model['id'], model['revision'], sync, perms or Perms())
        self.model = model
        self.label = bundle_format.model_label(model)
        self.plan = None
        self.staged = None
        self.base = None  # a delta's installed base: (directory, {path: identity}) from delta.find_base
        self.model_signature = None

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
        record = self.record()
        return record.data if record.files and os.path.lexists(self.dir) else None

    # -- deciding ------------------------------------------------------------

    def decide(self, verify='quick', workers=4, source=None):
        """What the model needs; with ``source`` (the bundle's), a model kept as installed also gets the
        bundle's model-signing signature beside it when it lacks that one."""
        self.plan = self._decide(self.perms, verify, workers)
        if self.plan.action in ('install', 'replace') and 'base' in self.model:
            # Before anything is staged: a delta on another base is refused with the cache as it is.
            self.base = delta.find_base(self.root, self.layout, self.model, verify, workers)
            self.plan.reasons.append(delta.describe(self.model))
        elif self.plan.action in ('fix', 'none') and source is not None:
            self._decide_signature(source)
        return self.plan

    def _decide_signature(self, source):
        data = model_signatures.read_from_bundle(source, self.model)
        reason = model_signatures.stale_beside(self.dir, data, self.perms)
        if reason:
            self.model_signature = data
            self.plan.signature = True
            self.plan.reasons.append(reason)
            if self.plan.action == 'none':
                self.plan.action = 'fix'

    def _decide(self, perms, verify, workers):
        try:
            top = os.lstat(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return InstallPlan('install', ['new to this cache'])
        if not stat.S_ISDIR(top.st_mode):
            return InstallPlan('replace', ['%s is not a directory' % self.rel])
        record = self.record()
        facts = record.data
        m = self.model
        if not record.files:
            return InstallPlan('replace', ['no record of a verified install'])
        other = ''
        if facts.get('commit') != m['commit']:
            other = 'installed commit %s, the bundle has %s' % (str(facts.get('commit'))[:12], m['commit'][:12])
        if set(record.files) != set(f['path'] for f in self.files):
            return InstallPlan('replace', [(other + ', with other files') if other else 'the installed file list differs from the bundle'])
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
                return InstallPlan('replace', [other])
            return InstallPlan('replace', ['%d file(s) missing or changed since installed, for example %s' % (len(changed), changed[0])])
        if verify == 'full':
            corrupt = self._corrupt(workers)
            if corrupt:
                return InstallPlan('replace', ['%d file(s) differ from the bundle (verify=full), for example %s' % (len(corrupt), corrupt[0])])
        for rel in sorted(parent_dirs(f['path'] for f in self.files)):
            st = lstat_or_none(join(self.dir, rel))
            if st is None or not stat.S_ISDIR(st.st_mode):
                return InstallPlan('replace', ['directory %s is missing' % rel])
            if not perms.ok(st, perms.dir):
                wrong_perms.append(join(self.dir, rel))
        if not perms.ok(top, perms.dir):
            wrong_perms.append(self.dir)
        wanted_metadata = self.wanted_metadata()
        stale_metadata = self.stale_metadata(wanted_metadata)
        for name in sorted(set(wanted_metadata) - set(stale_metadata)):
            path = os.path.join(self.dir, name)
            if not perms.ok(os.lstat(path), perms.file_mode(name)):
                wrong_perms.append(path)
        links = self.stale_links()
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
            return InstallPlan('fix', reasons, metadata=stale_metadata, links=links, perms=wrong_perms, record=record_stale)
        return InstallPlan('none')

    def _wrong_perms_around(self, perms):
        """The record and the directories between the cache root and the model or its links, where owner or mode differ."""
        paths = []
        st = lstat_or_none(self.record_path)
        if st is not None and stat.S_ISREG(st.st_mode) and not perms.ok(st, perms.file):
            paths.append(self.record_path)
        for rel in sorted(self.above()):
            path = absolute(self.root, rel)
            st = lstat_or_none(path)
            if st is not None and stat.S_ISDIR(st.st_mode) and not perms.ok(st, perms.dir):
                paths.append(path)
        return paths

    def _corrupt(self, workers):
        digests = sha256_files([join(self.dir, f['path']) for f in self.files], workers)
        return [f['path'] for f, digest in zip(self.files, digests) if digest != f['sha256']]

    # -- recovering ----------------------------------------------------------

    # -- applying ------------------------------------------------------------

    def stage(self, bundle, buffer_size=None):
        """Stream, verify and stage the model with its metadata and pending record; returns bytes."""
        sink = StagingSink(self.staging, self.perms, self.sync)
        sink.create()
        try:
            kwargs = {'buffer_size': buffer_size} if buffer_size else {}
            bundle.extract(self.model, sink, **kwargs)
            if self.base is not None:
                delta.lend(self.base[0], self.base[1], self.model, sink)
            self.model_signature = model_signatures.read_from_bundle(bundle.source, self.model)
            for name, data in sorted(self.wanted_metadata().items()):
                sink.write_metadata(name, data, self.model['created_at'])
            sink.finish()
            self.seal([(f['path'], f['size'], f['sha256'], f['revision']) for f in self.files], self.facts())
        except BaseException:
            self.unstage()
            raise
        self.staged = True
        return self.model['bytes']

    def unstage(self):
        ModelState.unstage(self)
        self.staged = None

    def commit(self):
        """Move the staged model into place, promote its record, make its links, drop the old copy."""
        self.swap_in()
        model_signatures.place_beside(self.dir, self.model_signature, self.perms, self.sync)
        self.staged = None

    def fix(self):
        """Bring metadata, links, owners, modes, the model-signing signature and the record in line without touching the files."""
        plan, perms = self.plan, self.perms
        self.write_metadata(plan.metadata, self.wanted_metadata(), self.model['created_at'], into=self.dir)
        for path in plan.perms:
            if os.path.isdir(path) and not os.path.islink(path):
                perms.apply(path, perms.dir)
            else:
                perms.apply(path, perms.file_mode(os.path.relpath(path, self.dir).replace(os.sep, '/')))
        self.make_links(plan.links)
        if plan.signature:
            model_signatures.place_beside(self.dir, self.model_signature, self.perms, self.sync)
        if plan.record:
            record = self.record()
            for f in self.files:
                record.files[f['path']]['revision'] = f['revision']
            self.save_record(record, self.facts())


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


def check_free_space(root, models, copies=True):
    """Fail before writing when the filesystem of ``root`` cannot take the staged copies of ``models`` (without
    ``copies``, files moved or linked in from the same file system: only their directories, metadata and records)."""
    if not models:
        return
    block = os.statvfs(root).f_frsize or 4096
    needed = 0
    inodes = 0
    for model in models:
        files = model['files']
        # Files a delta's base lends are hard-linked: no room for them.
        carried = bundle_format.carried_files(model) if copies else ()
        needed += sum((f['size'] + block - 1) // block * block for f in carried)
        dirs = len(parent_dirs(f['path'] for f in files)) + 1
        needed += (dirs + len(bundle_format.metadata_entries(model))) * block
        inodes += len(files) + dirs + 3
    needed += sum(len(json.dumps(model['files'])) for model in models)  # records, roughly
    require_space(root, needed, 'to install %s (the old copies stay in place until every model is verified)' % (
        ', '.join(bundle_format.model_label(m) for m in models)), inodes)


class Locks:
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
