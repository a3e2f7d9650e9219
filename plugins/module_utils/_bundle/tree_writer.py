# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a bundle in tree form (see format.py): each model's tar replaced by a directory of its members.

The manifest is the one a tar bundle has (``tar_size`` and ``tar_sha256`` included: the tar is streamed through
its hash, never stored); SHA256SUMS covers manifest.json only, whose entries carry every file's sha256.

A model file is hard-linked from the cache where it can be (same file system, mode 0644): the tree then costs no
second copy, and the file keeps the modification time it has in the cache, which must not change under the
cache's record. Otherwise it is copied, mode 0644 with the commit's time. Directories and the SDK metadata
(written from the manifest) are always the tree's own. A model directory is built beside its place and swapped
in whole, so a reader finds the old or the new one.
"""

import hashlib
import os
import shutil
import stat
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tar_writer import BUFFER_SIZE, BUFFERS, BundleWriteError, write_model_tar
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.writer import BundlePlan, fsync_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import sync_tree
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, lstat_or_none, space_ran_out
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import remove_tree, replace_dir


def tree_is_complete(dest, model):
    """True when ``dest`` holds the tree of ``model`` with every member of the kind and size the manifest says."""
    top = os.path.join(dest, bundle_format.tree_dir_name(model))
    for name, kind, size in bundle_format.tar_members(model):
        st = lstat_or_none(os.path.join(top, *name.split('/')))
        if st is None:
            return False
        if kind == 'dir' and not stat.S_ISDIR(st.st_mode):
            return False
        if kind != 'dir' and (not stat.S_ISREG(st.st_mode) or st.st_size != size):
            return False
    return True


class TreePlan(BundlePlan):
    """BundlePlan for a tree-form bundle: a directory per model instead of a tar."""

    missing_reason = 'model directory missing or incomplete'

    def kept_name(self, model):
        return bundle_format.tree_dir_name(model)

    def _on_disk(self, model):
        return tree_is_complete(self.dest, model)

    def __init__(self, dest, entries, prune=True, base_manifest_sha256=None):
        BundlePlan.__init__(self, dest, entries, prune, base_manifest_sha256)
        self.copied = 0  # bytes copied rather than hard-linked

    def sums(self, manifest):
        return bundle_format.sums_bytes([(hashlib.sha256(manifest).hexdigest(), bundle_format.MANIFEST)])

    def bytes_to_write(self):
        """Upper bound: every file copied (hard links take no room)."""
        return sum(f['size'] for m in self.write for f in bundle_format.carried_files(m))

    def apply(self, verify='none', buffer_size=BUFFER_SIZE, buffers=BUFFERS):
        """Build each model's new directory beside its place and swap it in, then write manifest.json and
        SHA256SUMS, then remove what the bundle no longer holds."""
        try:
            for entry in self.write:
                self._write_tree(entry, verify, buffer_size, buffers)
            manifest = self.manifest()
            atomic_write(os.path.join(self.dest, bundle_format.MANIFEST), manifest, bundle_format.FILE_MODE)
            atomic_write(os.path.join(self.dest, bundle_format.SUMS), self.sums(manifest), bundle_format.FILE_MODE)
            for name in self.prune:
                remove_tree(os.path.join(self.dest, name))
            fsync_dir(self.dest)
        except OSError as exc:
            full = space_ran_out(exc, self.dest, self.bytes_to_write(), 'writing the tree', 'the partial model directories were')
            if full is None:
                raise
            raise full

    def _write_tree(self, entry, verify, buffer_size, buffers):
        source = self.sources[(entry['id'], entry['revision'])]
        label = bundle_format.model_label(entry)
        stats = dict((p, (e['size'], e.get('mtime_ns'))) for p, e in source.record.files.items())
        work = tempfile.mkdtemp(prefix='.%s.' % bundle_format.tree_dir_name(entry), suffix='.tmp', dir=self.dest)
        try:
            self.copied += populate(entry, source.dir, work, stats)
            # The tar is hashed from the files now in the tree: the manifest describes what the tree holds.
            with open(os.devnull, 'wb') as sink:
                size, digest = write_model_tar(entry, work, sink.fileno(), stats=None, verify=verify == 'full',
                                               buffer_size=buffer_size, buffers=buffers)
            if size != entry['tar_size']:
                raise BundleWriteError('%s: its tar would hold %d bytes, expected %d' % (label, size, entry['tar_size']))
            entry['tar_sha256'] = digest
            sync_tree(work, ())
            target = os.path.join(self.dest, bundle_format.tree_dir_name(entry))
            old = replace_dir(work, target, work[:-len('.tmp')] + '-old.tmp')
            fsync_dir(self.dest)
            if old is not None:
                remove_tree(old)
        except BundleWriteError as exc:
            raise BundleWriteError('%s (%s): %s' % (label, source.dir, exc))
        finally:
            remove_tree(work)


def populate(model, source_dir, top, stats):
    """Fill ``top`` with the members of ``model``'s tar: files hard-linked from ``source_dir`` or copied, the SDK
    metadata written. ``stats``: {path: (size, mtime_ns)} each source file must have. Returns the bytes copied."""
    mtime_ns = model['created_at'] * 1000000000
    metadata = dict(bundle_format.metadata_entries(model))
    dev = os.lstat(top).st_dev
    copied = 0
    dirs = []
    for name, kind, _size in bundle_format.tar_members(model):
        path = os.path.join(top, *name.split('/'))
        if kind == 'dir':
            os.mkdir(path, bundle_format.DIR_MODE)
            dirs.append(path)
        elif kind == 'metadata':
            atomic_write(path, metadata[name], bundle_format.FILE_MODE, sync=False)
            os.utime(path, ns=(mtime_ns, mtime_ns))
        elif not _link(os.path.join(source_dir, *name.split('/')), path, dev, stats[name], name):
            copied += _copy(os.path.join(source_dir, *name.split('/')), path, stats[name], name)
            os.utime(path, ns=(mtime_ns, mtime_ns))
    for path in sorted(dirs, key=lambda d: -d.count(os.sep)) + [top]:
        os.chmod(path, bundle_format.DIR_MODE)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return copied


def _check(st, expected, name):
    if not stat.S_ISREG(st.st_mode):
        raise BundleWriteError('%s: not a regular file' % name)
    if (st.st_size, st.st_mtime_ns) != tuple(expected):
        raise BundleWriteError('%s: changed since it was verified' % name)


def _link(source, target, dev, expected, name):
    """Hard-link ``source`` at ``target`` when it is on the tree's file system with the tree's file mode."""
    try:
        st = os.lstat(source)
    except OSError as exc:
        raise BundleWriteError('%s: cannot read: %s' % (name, exc.strerror or exc))
    _check(st, expected, name)
    if st.st_dev != dev or stat.S_IMODE(st.st_mode) != bundle_format.FILE_MODE:
        return False
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # protected_hardlinks, a file system without links: copy
        return False
    _check(os.lstat(target), expected, name)  # the verified file, not one put there since
    return True


def _copy(source, target, expected, name):
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
    except OSError as exc:
        raise BundleWriteError('%s: cannot open: %s' % (name, exc.strerror or exc))
    try:
        with os.fdopen(fd, 'rb', closefd=False) as src:
            _check(os.fstat(fd), expected, name)
            with open(target, 'xb') as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
            _check(os.fstat(fd), expected, name)
    finally:
        os.close(fd)
    os.chmod(target, bundle_format.FILE_MODE)
    return expected[0]
