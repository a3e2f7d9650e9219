# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring one model directory of a cache in line with a hub listing.

Nothing unverified ever gets a final name: files are fetched into
``.modelseed/partial``, verified, moved to ``.modelseed/incoming``, and only
when every file of the model is there does the model directory change: a new
model arrives with a single directory rename, an update is swapped in whole
(see swap.py), so that readers see the old commit or the new one, never a mix.

With ``sync`` (the default) each download is fsynced before it gets its name in incoming/, and the
whole staged tree before the rename or swap that puts it in place (durable.py): after a power failure
the model is the old or the new commit, and no record calls a file verified that does not hold its bytes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import os
import shutil
import stat
import threading
import time

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs, fsync_path, sync_tree
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.fetch import FetchError, fetch_file
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpError
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import (
    METADATA_LAYOUTS, absolute, alias_links, model_dir)
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import (
    NoSpace, atomic_write, lstat_or_none, makedirs, read_bytes, readlink_or_none, require_space, space_ran_out, unlink, unlink_with_temps)
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.progress import Progress
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record, state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.swap import (
    discard, drop_record, empty_trash, link_tree, promote, prune_tree, recover_pending, replace_dir, save_pending, sync_replaced, trash_path)

# A killed run re-hashes (never re-fetches) what it verified since the last save.
RECORD_SAVE_INTERVAL = 1.0


def _lstat_file(path):
    """stat of a regular file (not followed through links), else None."""
    st = lstat_or_none(path)
    return st if st is not None and stat.S_ISREG(st.st_mode) else None


class Plan(object):
    def __init__(self):
        self.reuse = []      # recorded, unchanged since verified
        self.adopt = []      # in place, unrecorded, hash verified now
        self.copy = []       # (file, source): verified copies from adopt_from
        self.staged = []     # verified earlier, waiting in incoming/
        self.fetch = []      # to download
        self.metadata = []   # SDK metadata file names to (re)write
        self.links = []      # (link, target) to create or fix
        self.record_stale = False

    @property
    def changed(self):
        return bool(self.adopt or self.copy or self.staged or self.fetch or self.metadata or self.links or self.record_stale)

    def reasons(self):
        """Why the model directory is not yet what the listing asks for."""
        parts = []
        for items, why in ((self.fetch, 'missing or changed on the hub'),
                           (self.staged, 'verified by an earlier run, not yet in place'),
                           (self.adopt, 'found without metadata, verified by sha256'),
                           (self.copy, 'found in adopt_from, verified by sha256')):
            if items:
                parts.append('%d file(s) %s' % (len(items), why))
        if self.metadata:
            parts.append('SDK metadata %s missing or outdated' % ', '.join(self.metadata))
        if self.links:
            parts.append('%d layout link(s) missing' % len(self.links))
        if self.record_stale and not parts:
            parts.append('verification record outdated')
        return parts


class ModelCache(object):
    """One model, at one resolved revision, in one layout of one cache root."""

    def __init__(self, cache_root, layout, model_id, resolved, sync=True):
        self.root = cache_root
        self.sync = sync
        self.layout = layout
        self.model_id = model_id
        self.resolved = resolved
        self.rel = model_dir(layout, model_id, resolved.revision)
        self.dir = absolute(cache_root, self.rel)
        self.record_path = state_path(cache_root, 'records', self.rel, '.json')
        self.incoming = state_path(cache_root, 'incoming', self.rel)
        self.incoming_record_path = state_path(cache_root, 'incoming', self.rel, '.json')
        self.partial = state_path(cache_root, 'partial', self.rel)
        self.lock_path = state_path(cache_root, 'locks', self.rel, '.lock')
        self.progress_path = state_path(cache_root, 'progress', self.rel, '.json')
        self._synced = set()  # files of incoming/ this run fsynced already

    # -- planning ------------------------------------------------------------

    def plan(self, files, adopt=True, adopt_from=None, workers=4):
        plan = Plan()
        record = Record.load(self.record_path)
        incoming = Record.load(self.incoming_record_path)
        to_hash = []
        for f in files:
            st = _lstat_file(join(self.dir, f.path))
            if record.matches(f.path, f.size, f.sha256, st):
                plan.reuse.append(f)
                if record.files[f.path].get('revision') != f.revision:
                    plan.record_stale = True
            elif incoming.matches(f.path, f.size, f.sha256, _lstat_file(join(self.incoming, f.path))):
                plan.staged.append(f)
            elif _size_of(join(self.incoming, f.path)) == f.size:
                to_hash.append((f, join(self.incoming, f.path), 'staged'))
            elif adopt and st is not None and st.st_size == f.size:
                to_hash.append((f, join(self.dir, f.path), 'in place'))
            elif adopt_from and _size_of(join(adopt_from, f.path)) == f.size:
                to_hash.append((f, join(adopt_from, f.path), 'copy'))
            else:
                plan.fetch.append(f)
        for (f, path, how), digest in zip(to_hash, sha256_files([item[1] for item in to_hash], workers)):
            if digest != f.sha256:
                plan.fetch.append(f)
            elif how == 'in place':
                plan.adopt.append(f)
            elif how == 'staged':
                plan.staged.append(f)
            else:
                plan.copy.append((f, path))
        if set(record.files) != set(f.path for f in files) or record.data.get('commit') != self.resolved.commit:
            plan.record_stale = True
        plan.metadata = self._stale_metadata(files)
        plan.links = [(link, target) for link, target in alias_links(self.layout, self.model_id)
                      if readlink_or_none(absolute(self.root, link)) != target]
        plan.fetch.sort(key=lambda f: -f.size)  # big files first keeps every worker busy to the end
        return plan

    def _wanted_metadata(self, files):
        if self.layout not in METADATA_LAYOUTS:
            return {}
        return sdk_metadata.expected_files(self.model_id, self.resolved.revision, self.resolved.created_at,
                                           [(f.path, f.revision) for f in files])

    def _stale_metadata(self, files):
        stale = []
        for name, wanted in sorted(self._wanted_metadata(files).items()):
            path = os.path.join(self.dir, name)
            current = read_bytes(path, 1 << 24)
            mode_ok = current is not None and os.stat(path).st_mode & 0o444 == 0o444
            if not (mode_ok and sdk_metadata.same_content(name, current, wanted)):
                stale.append(name)
        return stale

    # -- applying ------------------------------------------------------------

    def apply(self, plan, files, client, api, workers=4):
        """Carry out ``plan``; return the number of bytes transferred."""
        makedirs(self.root)
        needed = sum(f.size for f in plan.fetch) - _partial_bytes(self.partial)
        require_space(self.root, needed, 'to download %s' % self.model_id)
        try:
            return self._apply(plan, files, client, api, workers)
        except OSError as exc:
            full = space_ran_out(exc, self.root, needed, 'downloading', 'the partial downloads were')
            if full is None:
                raise
            # Give back what this run took, keep the model as it was.
            self.remove_scratch()
            raise NoSpace('%s: %s' % (self.model_id, full))

    def _apply(self, plan, files, client, api, workers):
        # Only what this plan puts in incoming/: a run killed after moving incoming/ into place left a record of
        # files that are no longer there.
        incoming = Record(self.incoming_record_path)
        for f, source in plan.copy:
            target = join(self.incoming, f.path)
            makedirs(os.path.dirname(target))
            _link_or_copy(source, target)
            if self.sync:
                fsync_path(target)  # verified in another tree, maybe never synced
                self._synced.add(f.path)
            incoming.put(f.path, f.size, f.sha256, f.revision, os.lstat(target))
        for f in plan.staged:
            incoming.put(f.path, f.size, f.sha256, f.revision, os.lstat(join(self.incoming, f.path)))
        incoming.save()
        transferred = self._fetch_all(plan.fetch, incoming, client, api, workers)
        self._put_in_place(incoming, files)
        for link, target in plan.links:
            if _force_symlink(target, absolute(self.root, link)):
                Record(state_path(self.root, 'records', link, '.json')).remove()
        self.remove_scratch()
        return transferred

    def _fetch_all(self, todo, incoming, client, api, workers):
        if not todo:
            return 0
        lock = threading.Lock()
        progress = Progress(self.progress_path, self.model_id, len(todo), sum(f.size for f in todo))
        saved = [time.monotonic()]

        def one(f):
            label = '%s: %s' % (self.model_id, f.path)
            target = join(self.incoming, f.path)
            try:
                moved = fetch_file(client, api.file_url(self.model_id, self.resolved.commit, f.path),
                                   join(self.partial, f.path), target, f.size, f.sha256, label, progress.add_bytes, self.sync)
            except HttpError as exc:
                raise _named(label, exc)
            with lock:
                incoming.put(f.path, f.size, f.sha256, f.revision, os.lstat(target))
                self._synced.add(f.path)
                progress.file_done()
                if time.monotonic() - saved[0] >= RECORD_SAVE_INTERVAL:
                    incoming.save()
                    saved[0] = time.monotonic()
            return moved

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = [pool.submit(one, f) for f in todo]
                try:
                    return sum(fut.result() for fut in futures)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        finally:
            with lock:
                incoming.save()
            progress.finish()

    def _put_in_place(self, incoming, files):
        """Move what ``incoming`` holds into the model directory and record the model as verified."""
        metadata = self._wanted_metadata(files)
        if not os.path.isdir(self.dir) and os.path.isdir(self.incoming):
            # A new model appears complete, in one rename.
            for name, data in metadata.items():
                atomic_write(os.path.join(self.incoming, name), data)
            makedirs(os.path.dirname(self.dir))
            self._sync_incoming(metadata)
            drop_record(self.record_path, self.sync)
            replace_dir(self.incoming, self.dir, trash_path(self.root, self.rel))
            if self.sync:
                sync_replaced(self.incoming, self.dir, None)
            self._write_record(files)
            return
        # New metadata is written (and synced) beside the staged files first, so that only renames follow.
        stale = self._stale_metadata(files)
        makedirs(self.incoming)
        for name in stale:
            atomic_write(os.path.join(self.incoming, name), metadata[name])
        if not os.path.islink(self.dir) and self._swap_in(set(incoming.files) | set(stale), files):
            return
        # No swap here (a link or filesystem that refuses hard links): the files move in one by one, old and new
        # side by side for as long as the renames take.
        makedirs(self.dir)
        moves = [(join(self.incoming, relative), join(self.dir, relative)) for relative in sorted(incoming.files)]
        # Metadata names are not model file paths (join refuses them).
        moves.extend((os.path.join(self.incoming, name), os.path.join(self.dir, name)) for name in stale)
        self._sync_incoming(stale)
        drop_record(self.record_path, self.sync)
        moved = []
        for source, target in moves:
            if os.path.lexists(source):
                makedirs(os.path.dirname(target))
                os.rename(source, target)
                moved.append(os.path.dirname(target))
        if self.sync:
            fsync_dirs(*moved)
        self._write_record(files)

    def _swap_in(self, new, files):
        """Complete ``incoming`` with hard links to the rest of the model directory and swap the two; False if
        hard links cannot be made here (nothing changed then).

        The record is saved first as a pending record tied to ``incoming``'s inode: whichever moment a kill
        comes, the model directory is entirely old or entirely new and recover() knows which.
        """
        prune_tree(self.incoming, new)
        try:
            link_tree(self.dir, self.incoming, new)
        except OSError:
            prune_tree(self.incoming, new)
            return False
        # The files linked from the old copy are synced too: an adopted file or a run with sync off left them
        # verified but perhaps never on disk (an fsync of a clean file costs little).
        self._sync_incoming(())
        pending = Record(None)
        for f in files:
            pending.put(f.path, f.size, f.sha256, f.revision, os.lstat(join(self.incoming, f.path)))
        pending_path = save_pending(self.root, self.rel, pending, self.incoming, self.sync, **self._facts())
        # swap.swap_in, step by step here
        drop_record(self.record_path, self.sync)
        old = replace_dir(self.incoming, self.dir, trash_path(self.root, self.rel))
        if self.sync:
            sync_replaced(self.incoming, self.dir, old)
        promote(pending_path, self.record_path, self.sync)
        if old is not None:
            discard(self.root, self.rel, old)
        return True

    def _sync_incoming(self, written):
        """fsync what incoming/ holds that this run has not synced yet (``written``: metadata atomic_write synced),
        and its directories."""
        if self.sync:
            sync_tree(self.incoming, self._synced | set(written))

    def _facts(self):
        return dict(model=self.model_id, revision=self.resolved.revision, commit=self.resolved.commit,
                    created_at=self.resolved.created_at, layout=self.layout, path=self.rel)

    def _write_record(self, files):
        record = Record(self.record_path)
        for f in files:
            record.put(f.path, f.size, f.sha256, f.revision, os.lstat(join(self.dir, f.path)))
        failpoint('record.before')
        record.save(**self._facts())
        if self.sync:
            fsync_dirs(os.path.dirname(self.record_path))
        failpoint('record.after')

    def recover(self):
        """Finish or undo the swap of a killed run (call with the model's lock held); keeps verified downloads."""
        recover_pending(self.root, self.rel, keep_unswapped=True)
        empty_trash(self.root, self.rel)

    def remove_scratch(self):
        """Drop what a run keeps only while it works (also what a run killed after its record left)."""
        for path in (self.incoming, self.partial):
            shutil.rmtree(path, ignore_errors=True)
        unlink_with_temps(self.incoming_record_path)
        unlink_with_temps(self.progress_path)

    def remove(self):
        """Delete the model directory, its layout links and its state; True if anything existed."""
        existed = False
        for link in alias_links(self.layout, self.model_id):
            path = absolute(self.root, link[0])
            if os.path.islink(path):
                os.unlink(path)
                existed = True
        if os.path.lexists(self.dir):
            shutil.rmtree(self.dir)
            existed = True
        existed = os.path.exists(self.record_path) or existed
        Record(self.record_path).remove()
        self.remove_scratch()
        return existed


def _named(label, exc):
    """A transfer error that says which model and file it was about, not only which URL."""
    text = str(exc)
    return FetchError(text if text.startswith(label) else '%s: %s' % (label, text))


def _partial_bytes(top):
    total = 0
    for dirpath, _dirs, names in os.walk(top):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in names)
    return total


def _size_of(path):
    st = _lstat_file(path)
    return st.st_size if st else None


def _force_symlink(target, path):
    """Point ``path`` at ``target``, replacing a stale link or an old real copy; True if a copy went."""
    makedirs(os.path.dirname(path))
    tmp = path + '.modelseed-link'
    unlink(tmp)
    os.symlink(target, tmp)
    replaced_copy = os.path.isdir(path) and not os.path.islink(path)
    if replaced_copy:
        shutil.rmtree(path)
    os.rename(tmp, path)
    return replaced_copy


def _link_or_copy(source, target):
    """A hard link when source and cache share a filesystem, else a copy."""
    unlink(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
