# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write bundles (see format.py): which models go in and from where, and the bundle directory kept up to date.

The tars themselves come from tar_writer.py.
"""

import hashlib
import os
import re
import stat
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import SIGNATURE
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tar_writer import (
    BUFFER_SIZE,
    BUFFERS,
    BundleWriteError,
    model_tar_size,
    write_model_tar,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import LAYOUTS, absolute, model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import scan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import load_record
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, lstat_or_none, read_bytes, require_space, space_ran_out, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import copy_mode, remove_tree, replace_dir

# Source layouts tried by layout=auto, best first; 'models' is also the directory of 'all'.
AUTO_ORDER = ('models', 'snapshots', 'hub')
# Leftovers of an interrupted run: temp tars, manifests and sums (.<name>.<random>.tmp).
_TEMP = re.compile(r'^\..+\.tmp\Z')
# Where earlier releases kept the lock: inside the bundle, where a static file server would hand it out.
LEGACY_LOCK = '.lock'


# -- where a model comes from -----------------------------------------------


class Source:
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


class BundlePlan:
    """What a run would do to ``dest``: models to write or reuse, files to prune, why."""

    def __init__(self, dest, entries, prune=True, base_manifest_sha256=None):
        """``entries``: [(manifest entry without tar fields, Source)]; ``base_manifest_sha256``: of the manifest a
        delta bundle is made against (delta.py gave the entries their ``base``)."""
        self.dest = dest
        self.base_manifest_sha256 = base_manifest_sha256
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
        keep = set(self.kept_name(m) for m in self.models)
        self.prune = sorted(n for n in listdir(dest) if prune and n not in keep and _model_entry(dest, n))
        self.temp = sorted(n for n in listdir(dest) if _TEMP.match(n))

    # What the form keeps per model on disk (a tar here; tree_writer.TreePlan: a directory).
    missing_reason = 'tar missing or of another size'

    def kept_name(self, model):
        return model['tar']

    def _on_disk(self, model):
        return _tar_size_on_disk(self.dest, model['tar']) == model['tar_size']

    def _reason(self, entry, old):
        if old is None:
            return 'new'
        if old['commit'] != entry['commit']:
            return 'changed commit'
        if _key(old) != _key(entry):
            return 'changed files'
        if not self._on_disk(old):
            return self.missing_reason
        if old.get('source_layout') != entry['source_layout']:
            return 'source layout changed'
        return None

    def manifest(self):
        return bundle_format.manifest_bytes(self.models, self.base_manifest_sha256)

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
        for reason in ('new', 'changed commit', 'changed files', self.missing_reason, 'source layout changed', 'removed'):
            if self.reasons.get(reason):
                parts.append('%d model(s) %s' % (len(self.reasons[reason]), reason))
        if self.prune:
            tars = sum(1 for name in self.prune if name.endswith('.tar'))
            if tars:
                parts.append('%d stale tar(s) to remove' % tars)
            if len(self.prune) > tars:
                parts.append('%d stale model directories to remove' % (len(self.prune) - tars))
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
        for name in listdir(parent):
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
            # A signature of the old manifest does not hold for the new one: it is not carried over.
            if beside and _link_rest(self.dest, work, set(names) | set(self.prune) | {SIGNATURE}):
                copy_mode(self.dest, work)
                fsync_dir(work)
                # aside: where dest goes on kernels that cannot exchange, a name the next run also cleans up
                old = replace_dir(work, self.dest, work[:-len('.tmp')] + '-old.tmp')
                fsync_dir(parent)
                remove_tree(old)
            else:
                for name in names:
                    os.rename(os.path.join(work, name), os.path.join(self.dest, name))
                for name in self.prune:
                    remove_tree(os.path.join(self.dest, name))
                unlink(os.path.join(self.dest, SIGNATURE))
                fsync_dir(self.dest)
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


def _model_entry(dest, name):
    """True for a model's tar or tree directory (either form) of the bundle in ``dest``."""
    if name.startswith('.'):
        return False
    if name.endswith('.tar'):
        return _tar_size_on_disk(dest, name) is not None
    st = lstat_or_none(os.path.join(dest, name))
    return st is not None and stat.S_ISDIR(st.st_mode) and name.count('--') >= 2


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
        for name in listdir(dest):
            if name not in replaced and not _TEMP.match(name):
                os.link(os.path.join(dest, name), os.path.join(work, name), follow_symlinks=False)
    except OSError:
        return False
    return True


def listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
