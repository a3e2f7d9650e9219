# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a bundle in tree form (see format.py) from a directory, and put its files into a model's staging.

A model's directory must hold exactly the members its tar would (``bundle_format.tar_members``): regular files and
directories only, nothing else, each file of the manifest's size. With ``src_files``:

- ``copy``: each file is copied into the staging directory and hashed on the way (the tree stays as it is);
- ``link``: hard-linked, ``move``: renamed into it. Before the first link or rename every file of the model is
  hashed where it lies and checked against the manifest; after it, the staged name must be the very inode that was
  hashed. Linked files stay in the tree (a peer keeps seeding them); moved files leave it.

A refused model leaves the tree as it was, except that with ``move`` a file whose sha256 differs is deleted, so
that the transport sends it again (rsync would otherwise take a file of the right size and time for done); files
moved before a run fails otherwise (a full disk, a kill) go with its staging directory, and are sent again. Links
and renames need the tree on the cache's file system; elsewhere the install fails before it changes anything:
use ``copy`` there.
"""

import concurrent.futures
import errno
import hashlib
import os
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import Bundle, DirSource, read_manifest, read_sums
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import unlink

SRC_FILES = ('copy', 'link', 'move')
CHUNK = 8 << 20
_OPEN = os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)


class TreePlacementError(ModelseedError):
    """The tree cannot be linked or moved into the cache (another file system)."""


def is_tree(sums):
    """A tree-form bundle's SHA256SUMS covers manifest.json alone; a tar bundle's also lists its tars."""
    return set(sums) == {bundle_format.MANIFEST}


def open_bundle(source, src_files='copy', workers=4, trust=None, plan_only=False):
    """The bundle behind ``source`` (reader.DirSource or UrlSource), tar or tree form; with ``trust`` (a
    signature.Trust) its manifest's signature is verified before the manifest is believed. ``plan_only``: no model's
    files are read (the caller plans, or only fixes what is installed: see refuse_remote_files), so a tree-form bundle
    may be behind a URL too."""
    sums = read_sums(source)
    if is_tree(sums) and (isinstance(source, DirSource) or plan_only):
        return TreeBundle(source, sums, src_files, workers, trust)
    if is_tree(sums):
        refuse_remote_files(source)
    if src_files != 'copy':
        raise BundleError('src_files=%s needs a bundle in tree form (cache_bundle format=tree; the staging role\'s '
                          'staging_bundle_format: tree) in a directory on this host; %s holds tars' % (src_files, source.location('')))
    return Bundle(source, sums, trust)


def refuse_remote_files(source, needing=None):
    """A tree-form bundle's model files are read from a directory on this host only: over http(s), the manifest and
    the small files beside it are all there is to read. ``needing``: the models that would need their files."""
    raise BundleError('%s is a bundle in tree form, which is read from a directory on this host; over http(s) '
                      '%sthe bundle must hold tars (cache_bundle format=tar; the staging role\'s staging_bundle_format: tar)' % (
                          source.location(''), 'it can only bring installed models in line, and the files of %s are needed: ' % (
                              ', '.join(needing)) if needing else ''))


def _identity(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TreeBundle:
    """manifest.json checked against SHA256SUMS; each model's directory judged before anything of it is staged."""

    form = 'tree'

    def __init__(self, source, sums, src_files='copy', workers=4, trust=None):
        self.source = source
        self.src_files = src_files
        self.workers = workers
        self.manifest, self.manifest_sha256, self.signer = read_manifest(source, sums, trust)
        self.models = self.manifest['models']
        self.copies = src_files == 'copy'
        self.verb = {'copy': 'copied', 'link': 'hard-linked', 'move': 'moved'}[src_files]
        self._verified = {}

    def top(self, model):
        return self.source.location(bundle_format.tree_dir_name(model))

    # -- judging -----------------------------------------------------------------

    def prepare(self, model, staging_parent):
        """Judge ``model``'s directory (see judge), and for link/move check the file system and every file's sha256
        (a bad one is deleted with move)."""
        self.judge(model)
        if self.copies:
            return
        label, top = bundle_format.model_label(model), self.top(model)
        if os.lstat(top).st_dev != os.stat(staging_parent).st_dev:
            raise TreePlacementError('%s: %s is on another file system than the cache (%s): src_files=%s cannot take its files '
                                     'without copying them; put the tree on the cache\'s file system, or use src_files=copy' % (
                                         label, top, staging_parent, self.src_files))
        self._verified[(model['id'], model['revision'])] = self.verify_files(model)

    def judge(self, model):
        """Refuse ``model``'s directory unless it holds exactly the members of its tar, of their kinds and sizes,
        with the SDK metadata the manifest describes."""
        label = bundle_format.model_label(model)
        top = self.top(model)
        found = _walk(top, label)
        expected = dict((name, (kind, size)) for name, kind, size in bundle_format.tar_members(model))
        for name in sorted(found):
            st = found[name]
            wanted = expected.get(name)
            if wanted is None:
                raise BundleError('%s: %s holds %r, which is not in the manifest' % (label, top, name))
            kind, size = wanted
            if kind == 'dir' and not stat.S_ISDIR(st.st_mode):
                raise BundleError('%s: %r in %s is not a directory, the manifest implies one' % (label, name, top))
            if kind != 'dir' and not stat.S_ISREG(st.st_mode):
                raise BundleError('%s: %r in %s is not a regular file; a bundle holds only regular files and directories' % (
                    label, name, top))
            if kind != 'dir' and st.st_size != size:
                raise BundleError('%s: %r in %s has %d bytes, the manifest says %d' % (label, name, top, st.st_size, size))
        missing = sorted(set(expected) - set(found))
        if missing:
            raise BundleError('%s: %d member(s) the manifest implies are missing from %s, for example %r' % (
                label, len(missing), top, missing[0]))
        for entry in model['metadata']:
            digest = _hash(os.path.join(top, entry['path']))[0]
            if digest != entry['sha256']:
                raise BundleError('%s: %r in %s has sha256 %s, the manifest says %s' % (label, entry['path'], top, digest, entry['sha256']))

    def verify_files(self, model):
        """{path: identity of the inode hashed}; refuses the model at the first file whose sha256 differs."""
        label, top = bundle_format.model_label(model), self.top(model)
        carried = bundle_format.carried_files(model)
        paths = [os.path.join(top, *f['path'].split('/')) for f in carried]
        with concurrent.futures.ThreadPoolExecutor(max(1, self.workers)) as pool:
            results = list(pool.map(_hash, paths))
        verified = {}
        for entry, path, (digest, st) in zip(carried, paths, results):
            if digest != entry['sha256']:
                if self.src_files == 'move':
                    unlink(path)  # else the transport would take it for done
                raise BundleError('%s: %r in %s has sha256 %s, the manifest says %s%s' % (
                    label, entry['path'], top, digest, entry['sha256'], '; deleted it' if self.src_files == 'move' else ''))
            verified[entry['path']] = _identity(st)
        return verified

    # -- staging -----------------------------------------------------------------

    def extract(self, model, sink, buffer_size=None):
        """Put ``model``'s files into ``sink`` (install.StagingSink): copied and hashed, or linked or moved after
        prepare() verified them. The SDK metadata is the installer's to write."""
        label = bundle_format.model_label(model)
        top = self.top(model)
        for name, kind, _size in bundle_format.tar_members(model):
            if kind == 'dir':
                sink.directory(name)
        files = dict((f['path'], f) for f in bundle_format.carried_files(model))
        verified = self._verified.get((model['id'], model['revision']))
        for name in sorted(files):
            path = os.path.join(top, *name.split('/'))
            if verified is None:
                _copy_into(sink, path, name, files[name], model['created_at'], '%s: %r in %s' % (label, name, top))
                continue
            try:
                sink.adopt(name, path, self.src_files, model['created_at'], lambda st, name=name: _same(st, verified[name], label, name))
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise TreePlacementError('%s: %s is on another mount than the cache: src_files=%s cannot take %r; '
                                             'use src_files=copy' % (label, top, self.src_files, name))
                raise

    def close(self):
        self.source.close()


def _same(st, identity, label, name):
    if _identity(st) != identity:
        raise BundleError('%s: %r changed after it was verified' % (label, name))


def _walk(top, label):
    """{relative path: lstat} of everything below ``top``, which must be a directory (not a link)."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        raise BundleError('%s: %s is missing from the bundle' % (label, top))
    if not stat.S_ISDIR(st.st_mode):
        raise BundleError('%s: %s is not a directory' % (label, top))
    found = {}
    pending = ['']
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(top, rel) if rel else top) as entries:
            for entry in entries:
                name = rel + '/' + entry.name if rel else entry.name
                found[name] = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(found[name].st_mode):
                    pending.append(name)
    return found


def _hash(path):
    """(sha256, fstat) of the regular file ``path``, read through one descriptor."""
    fd = os.open(path, _OPEN)
    try:
        st = os.fstat(fd)
        digest = hashlib.sha256()
        for chunk in _chunks(fd):
            digest.update(chunk)
        return digest.hexdigest(), st
    finally:
        os.close(fd)


def _chunks(fd):
    """The bytes of ``fd`` to its end, as views of one reused buffer (each valid until the next)."""
    view = memoryview(bytearray(CHUNK))
    while True:
        n = os.readv(fd, [view])
        if not n:
            return
        yield view[:n]


def _copy_into(sink, path, name, entry, mtime, what):
    """Copy one file into the sink, hashing the bytes written; a file of another sha256 is refused."""
    fd = os.open(path, _OPEN)
    handle = sink.open_file(name, entry['size'])
    try:
        digest = hashlib.sha256()
        for chunk in _chunks(fd):
            digest.update(chunk)
            handle.write(chunk)
        if handle.written != entry['size'] or digest.hexdigest() != entry['sha256']:
            raise BundleError('%s has sha256 %s (%d bytes), the manifest says %s (%d bytes)' % (
                what, digest.hexdigest(), handle.written, entry['sha256'], entry['size']))
    except BaseException:
        sink.discard(handle, name)
        raise
    finally:
        os.close(fd)
    sink.close_file(handle, name, mtime)
