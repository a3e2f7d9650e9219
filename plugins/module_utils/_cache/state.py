# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-disk state of the models of a cache: every change a writer makes to a model goes through here.

A writer (a download, a bundle install) fills the model's staging directory; this layer puts it in place
so that readers see the old version or the new one, never a mix, and keeps the collection's own state
under ``<cache root>/.modelseed/``, which no SDK looks at (``<key>`` is the model directory, quoted):

- ``records/<key>.json``: the verified files of the model directory (records.py);
- ``incoming/<key>/``: the staging directory, on the cache's filesystem; ``incoming/<key>.json`` the record
  of what a download verified into it; ``incoming/<key>.install`` the pending record of a staged directory,
  carrying its inode;
- ``partial/<key>/``: downloads in progress, resumed from their length; ``progress/<key>.json`` their progress;
- ``locks/<key>.lock``: one writer per model at a time;
- ``trash/``: old copies, renamed there in one step and then deleted;
- ``push/``: not touched here: where the node role's push has rsync deliver a tree-form bundle, on the cache's
  filesystem, for cache_install to move its files into staging directories.

Publishing (``ModelState.swap_in``): the pending record is saved first, the old record removed, the
staged directory exchanged with the model directory (``renameat2(RENAME_EXCHANGE)``, see tree.py), then
the pending record promoted. A run killed anywhere leaves the directory entirely old or entirely new, and
``recover`` promotes the pending record if the swap happened (the model directory has its inode) or
drops it if not. With ``sync`` (durable.py) the staged tree and the pending record are on disk before
the swap, the old record is gone before it, and the directories the swap changed are synced before the
new record takes its place: after a power failure, too, no record calls a file verified that does not
hold its bytes.
"""


import os
import posixpath
import re
import shutil
import stat
import time
from urllib.parse import quote, unquote

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import absolute, alias_links, model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join, signature_beside
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.perms import Perms, ensure_dirs, write_file
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs, sync_tree
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import (
    lstat_or_none,
    makedirs,
    parent_dirs,
    read_bytes,
    readlink_or_none,
    remove_temps,
    unlink,
    unlink_with_temps,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import exchange, link_tree, prune_tree, remove_tree, replace_dir, sync_replaced

STATE_DIR = '.modelseed'
RECORDS = 'records'
STAGING = 'incoming'
PARTIAL = 'partial'
PROGRESS = 'progress'
LOCKS = 'locks'
TRASH = 'trash'
# Where the records and locks of the models live: the models' owner and dir_mode apply to them too.
STATE_DIRS = (STATE_DIR,) + tuple(STATE_DIR + '/' + kind for kind in (RECORDS, STAGING, LOCKS))
PENDING_SUFFIX = '.install'
LINK_SUFFIX = '.modelseed-link'


def state_path(cache_root, kind, relative_model_dir, suffix=''):
    """Path of one kind of state (RECORDS, STAGING, PARTIAL, PROGRESS, LOCKS) for a model directory."""
    return os.path.join(cache_root, STATE_DIR, kind, quote(relative_model_dir, safe='') + suffix)


def record_path(cache_root, rel):
    return state_path(cache_root, RECORDS, rel, '.json')


def lock_path(cache_root, rel):
    return state_path(cache_root, LOCKS, rel, '.lock')


def load_record(cache_root, rel):
    return Record.load(record_path(cache_root, rel))


class ModelState:
    """One model directory of a cache, in one layout, with its record, staging area and layout links.

    ``perms`` (perms.Perms) give what is written its owner and modes; without them directories on the way
    are made as the running user, through links (a cache below a linked directory works).
    """

    def __init__(self, root, layout, model_id, revision, sync=True, perms=None):
        self.root = root
        self.layout = layout
        self.model_id = model_id
        self.sync = sync
        self.perms = perms
        self.rel = model_dir(layout, model_id, revision)
        self.dir = absolute(root, self.rel)
        self.record_path = record_path(root, self.rel)
        self.lock_path = lock_path(root, self.rel)
        self.staging = state_path(root, STAGING, self.rel)
        self.staging_record_path = state_path(root, STAGING, self.rel, '.json')
        self.pending_path = state_path(root, STAGING, self.rel, PENDING_SUFFIX)
        self.partial = state_path(root, PARTIAL, self.rel)
        self.progress_path = state_path(root, PROGRESS, self.rel, '.json')

    # -- reading -------------------------------------------------------------

    def record(self):
        return Record.load(self.record_path)

    def stale_metadata(self, wanted, mode_ok=None):
        """Names of the SDK metadata files in ``wanted`` ({name: bytes}) that are missing, not regular files,
        hold other content, or (with ``mode_ok(stat)``) have a mode it refuses."""
        stale = []
        for name, data in sorted(wanted.items()):
            path = os.path.join(self.dir, name)
            st = lstat_or_none(path)
            if (st is None or not stat.S_ISREG(st.st_mode) or (mode_ok is not None and not mode_ok(st))
                    or not sdk_metadata.same_content(name, read_bytes(path, 1 << 24), data)):
                stale.append(name)
        return stale

    def stale_links(self):
        """[(link, target)] of the layout's links that are missing or point elsewhere."""
        return [(link, target) for link, target in alias_links(self.layout, self.model_id)
                if readlink_or_none(absolute(self.root, link)) != target]

    def above(self):
        """Directories (relative) between the cache root and the model directory or its layout links."""
        return parent_dirs([self.rel] + [link for link, _target in alias_links(self.layout, self.model_id)])

    # -- recovering ----------------------------------------------------------

    def recover(self, keep_staged=False):
        """Finish or undo what a killed run left (call with the model's lock held): promote a pending record
        whose swap happened, drop it otherwise, empty the model's trash and remove half-written temp files.

        The staging directory goes when the swap happened (it holds the old copy then), and also when it did
        not unless ``keep_staged`` (verified downloads are worth keeping for the next attempt)."""
        promoted = recover_pending(self.root, self.rel, keep_staged)
        empty_trash(self.root, self.rel)
        remove_temps(os.path.dirname(self.record_path), '.%s.' % quote(self.rel, safe=''))
        recorded = set(self.record().files)  # a model file may look like a temp file: never delete one
        for name in sdk_metadata.METADATA_FILES if recorded else ():
            remove_temps(self.dir, '.%s.' % name, keep=recorded)
        # A kept staging directory is swapped in whole by the next attempt: not with a half-written metadata file.
        staged = set(Record.load(self.staging_record_path).files)
        for name in sdk_metadata.METADATA_FILES:
            remove_temps(self.staging, '.%s.' % name, keep=staged)
        for link, _target in alias_links(self.layout, self.model_id):
            unlink(absolute(self.root, link) + LINK_SUFFIX)
        return promoted

    # -- staging -------------------------------------------------------------

    def write_metadata(self, names, wanted, mtime=None, into=None):
        """Write the SDK metadata files ``names`` (contents from ``wanted``) into the staging directory, or
        into ``into`` (the model directory, for a fix in place)."""
        perms = self.perms or Perms()
        directory = self.staging if into is None else into
        makedirs(directory)
        for name in names:
            write_file(os.path.join(directory, name), wanted[name], perms, perms.file_mode(name), mtime, self.sync)

    def complete_staging(self, changed):
        """Reduce the staging directory to the ``changed`` files and hard-link the rest of the model directory
        into it, so that it holds the whole new version; False (nothing changed) where links cannot be made."""
        prune_tree(self.staging, changed)
        try:
            link_tree(self.dir, self.staging, changed)
        except OSError:
            prune_tree(self.staging, changed)
            return False
        return True

    def seal(self, entries, facts, synced=None):
        """Make the staged directory ready to swap in: on disk (but the files in ``synced``, already synced)
        and described by a pending record tied to its inode. ``entries``: [(path, size, sha256, revision)]."""
        if self.sync:
            sync_tree(self.staging, synced or ())
        pending = Record(self.pending_path)
        for path, size, sha256, revision in entries:
            pending.put(path, size, sha256, revision, os.lstat(join(self.staging, path)))
        top = os.lstat(self.staging)
        pending.save(dir_ino=top.st_ino, dir_dev=top.st_dev, **facts)
        if self.perms is not None:
            self.perms.apply(self.pending_path, self.perms.file)  # the record is the model's metadata too
        if self.sync:
            fsync_dirs(os.path.dirname(self.pending_path))

    def unstage(self):
        unlink(self.pending_path)
        remove_tree(self.staging)

    # -- publishing ----------------------------------------------------------

    def swap_in(self):
        """Swap the sealed staging directory into place, promote its record, make the layout links and delete
        the old copy."""
        self._parent_dirs(posixpath.dirname(self.rel))
        drop_record(self.record_path, self.sync)
        old = replace_dir(self.staging, self.dir, trash_path(self.root, self.rel))
        if self.sync:
            sync_replaced(self.staging, self.dir, old)
        promote(self.pending_path, self.record_path, self.sync)
        self.make_links(self.stale_links())
        if old is not None:
            discard(self.root, self.rel, old)

    def move_in(self, names, entries, facts, synced=None):
        """Where no swap is possible (the model directory is a link, or hard links are refused): move the
        staged ``names`` into the model directory one by one, old and new side by side while the renames
        take, then record the model. ``entries`` and ``synced`` as for seal()."""
        makedirs(self.dir)
        moves = [(os.path.join(self.staging, *name.split('/')), os.path.join(self.dir, *name.split('/'))) for name in sorted(names)]
        if self.sync:
            sync_tree(self.staging, synced or ())
        drop_record(self.record_path, self.sync)
        moved = []
        for source, target in moves:
            if os.path.lexists(source):
                makedirs(os.path.dirname(target))
                os.rename(source, target)
                moved.append(os.path.dirname(target))
        if self.sync:
            fsync_dirs(*moved)
        record = Record(self.record_path)
        for path, size, sha256, revision in entries:
            record.put(path, size, sha256, revision, os.lstat(join(self.dir, path)))
        failpoint('record.before')
        self.save_record(record, facts)
        failpoint('record.after')
        self.make_links(self.stale_links())

    def save_record(self, record, facts):
        record.path = self.record_path
        makedirs(os.path.dirname(self.record_path))
        record.save(**facts)
        if self.perms is not None:
            self.perms.apply(self.record_path, self.perms.file)
        if self.sync:
            fsync_dirs(os.path.dirname(self.record_path))

    def make_links(self, links):
        """Point each layout link at its target in one rename; a real copy where a link belongs (an earlier
        install in another layout) is exchanged for the link, then deleted with its record."""
        for link, target in links:
            path = absolute(self.root, link)
            self._parent_dirs(posixpath.dirname(link))
            tmp = path + LINK_SUFFIX
            unlink(tmp)
            os.symlink(target, tmp)
            if self.perms is not None:
                self.perms.chown(tmp, follow=False)
            if os.path.isdir(path) and not os.path.islink(path):
                if not exchange(tmp, path):
                    discard(self.root, link, path)
                    os.rename(tmp, path)
                else:
                    discard(self.root, link, tmp)
                Record(record_path(self.root, link)).remove()
            else:
                os.rename(tmp, path)
        if self.sync and links:
            fsync_dirs(*(os.path.dirname(absolute(self.root, link)) for link, _target in links))

    def _parent_dirs(self, rel):
        if self.perms is None:
            makedirs(absolute(self.root, rel) if rel else self.root)
        else:
            ensure_dirs(self.root, rel, self.perms)

    # -- removing ------------------------------------------------------------

    def remove_scratch(self):
        """Drop what a run keeps only while it works (also what a run killed after its record left)."""
        for path in (self.staging, self.partial):
            shutil.rmtree(path, ignore_errors=True)
        unlink(self.pending_path)
        unlink_with_temps(self.staging_record_path)
        unlink_with_temps(self.progress_path)

    def remove(self):
        """Delete the model directory (one rename into the trash first), its layout links, its record and its
        scratch; True if any of it existed."""
        existed = os.path.lexists(self.dir) or os.path.exists(self.record_path)
        for link, _target in alias_links(self.layout, self.model_id):
            path = absolute(self.root, link)
            if os.path.islink(path):
                os.unlink(path)
                existed = True
        discard(self.root, self.rel, self.dir)
        unlink(signature_beside(self.dir))  # it holds for the files removed, and only for them
        Record(self.record_path).remove()
        self.remove_scratch()
        return existed


# -- the steps of a swap, and what a killed run left ---------------------------------


def drop_record(path, sync=True):
    """Remove the record of a directory about to be replaced: after a power failure no record may call the new
    files verified with the old ones' facts."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    if sync:
        fsync_dirs(os.path.dirname(path))


def promote(pending_path, path, sync=True):
    """Rename the pending record of a swapped-in directory over its record."""
    failpoint('record.before')
    makedirs(os.path.dirname(path))
    os.rename(pending_path, path)
    if sync:
        fsync_dirs(os.path.dirname(path))
    failpoint('record.after')


def trash_path(root, rel):
    return os.path.join(root, STATE_DIR, TRASH, '%s.%d.%d' % (quote(rel, safe=''), os.getpid(), time.monotonic_ns()))


def discard(root, rel, path):
    """Move ``path`` into the trash with one rename (it vanishes at once), then delete it."""
    if not os.path.lexists(path):
        return
    target = trash_path(root, rel)
    makedirs(os.path.dirname(target), 0o700)
    os.rename(path, target)
    remove_tree(target)


def empty_trash(root, rel=None):
    """Delete what killed runs left in the trash: everything, or only the old copies of model ``rel``."""
    top = os.path.join(root, STATE_DIR, TRASH)
    try:
        names = os.listdir(top)
    except (FileNotFoundError, NotADirectoryError):
        return
    # trash_path names end in .<pid>.<ns>: model 'a/v1' must not take the trash of model 'a/v1.0'
    mine = re.compile(r'.*\Z' if rel is None else re.escape(quote(rel, safe='')) + r'\.\d+\.\d+\Z')
    for name in (n for n in names if mine.match(n)):
        try:
            remove_tree(os.path.join(top, name))
        except OSError:
            pass  # another run is emptying it too


def recover_pending(root, rel, keep_unswapped=False):
    """Promote a pending record whose swap happened; drop the pending record otherwise (see ModelState.recover)."""
    pending_path = state_path(root, STAGING, rel, PENDING_SUFFIX)
    staging = state_path(root, STAGING, rel)
    promoted = False
    if os.path.exists(pending_path):
        pending = Record.load(pending_path)
        st = lstat_or_none(absolute(root, rel))
        if (st is not None and pending.files and pending.data.get('path') == rel
                and pending.data.get('dir_ino') == st.st_ino and pending.data.get('dir_dev') == st.st_dev):
            promote(pending_path, record_path(root, rel))
            promoted = True
        else:
            unlink(pending_path)
    if os.path.lexists(staging) and (promoted or not keep_unswapped):
        discard(root, rel, staging)
        unlink(state_path(root, STAGING, rel, '.json'))  # a download's record of that staging
    remove_temps(os.path.dirname(staging), '.%s.' % quote(rel, safe=''))
    return promoted


# -- the whole cache ----------------------------------------------------------------


def pending_models(root):
    """Model directories (relative) with a pending record left by a killed run."""
    top = os.path.join(root, STATE_DIR, STAGING)
    try:
        names = os.listdir(top)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(unquote(n[:-len(PENDING_SUFFIX)]) for n in names if n.endswith(PENDING_SUFFIX))


def record_files(root):
    """Paths of every record of the cache."""
    top = os.path.join(root, STATE_DIR, RECORDS)
    try:
        names = sorted(os.listdir(top))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(top, name) for name in names if name.endswith('.json')]


def recorded_models(root, layout):
    """[(rel, Record)] of models recorded in ``layout`` whose record is where its facts say."""
    found = []
    for path in record_files(root):
        record = Record.load(path)
        facts = record.data
        if facts.get('layout') != layout:
            continue
        try:
            rel = model_dir(layout, facts.get('model'), facts.get('revision'))
        except (InvalidName, ValueError, TypeError, AttributeError):
            continue
        if facts.get('path') == rel and quote(rel, safe='') + '.json' == os.path.basename(path):
            found.append((rel, record))
    return found


def prepare_state_dirs(root, perms):
    """Make the missing state directories with the owner and mode of the models' directories."""
    for rel in STATE_DIRS:
        ensure_dirs(root, rel, perms)
