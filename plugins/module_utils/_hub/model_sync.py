# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring one model directory of a cache in line with a hub listing.

Nothing unverified ever gets a final name: files are fetched into
``.modelseed/partial``, verified, moved to ``.modelseed/incoming``, and only
when every file of the model is there does the model directory change: a new
model arrives with a single directory rename, an update is swapped in whole
(see state.py), so that readers see the old commit or the new one, never a mix.

With ``sync`` (the default) each download is fsynced before it gets its name in incoming/, and the
whole staged tree before the rename or swap that puts it in place (durable.py): after a power failure
the model is the old or the new commit, and no record calls a file verified that does not hold its bytes.
"""


import concurrent.futures
import os
import shutil
import stat
import threading
import time

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import METADATA_LAYOUTS
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import ModelState
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import NoSpace, lstat_or_none, makedirs, require_space, space_ran_out, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.fetch import FetchError, fetch_file
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpError
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.progress import Progress

# A killed run re-hashes (never re-fetches) what it verified since the last save.
RECORD_SAVE_INTERVAL = 1.0


def _lstat_file(path):
    """stat of a regular file (not followed through links), else None."""
    st = lstat_or_none(path)
    return st if st is not None and stat.S_ISREG(st.st_mode) else None


class DownloadPlan:
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


class ModelCache(ModelState):
    """One model, at one resolved revision, in one layout of one cache root."""

    def __init__(self, cache_root, layout, model_id, resolved, sync=True):
        ModelState.__init__(self, cache_root, layout, model_id, resolved.revision, sync)
        self.resolved = resolved
        self._synced = set()  # files of incoming/ this run fsynced already

    # -- planning ------------------------------------------------------------

    def plan(self, files, adopt=True, adopt_from=None, workers=4):
        plan = DownloadPlan()
        record = Record.load(self.record_path)
        incoming = Record.load(self.staging_record_path)
        to_hash = []
        for f in files:
            st = _lstat_file(join(self.dir, f.path))
            if record.matches(f.path, f.size, f.sha256, st):
                plan.reuse.append(f)
                if record.files[f.path].get('revision') != f.revision:
                    plan.record_stale = True
            elif incoming.matches(f.path, f.size, f.sha256, _lstat_file(join(self.staging, f.path))):
                plan.staged.append(f)
            elif _size_of(join(self.staging, f.path)) == f.size:
                to_hash.append((f, join(self.staging, f.path), 'staged'))
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
        plan.links = self.stale_links()
        plan.fetch.sort(key=lambda f: -f.size)  # big files first keeps every worker busy to the end
        return plan

    def _wanted_metadata(self, files):
        if self.layout not in METADATA_LAYOUTS:
            return {}
        return sdk_metadata.expected_files(self.model_id, self.resolved.revision, self.resolved.created_at,
                                           [(f.path, f.revision) for f in files])

    def _stale_metadata(self, files):
        return self.stale_metadata(self._wanted_metadata(files), _readable)

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
        incoming = Record(self.staging_record_path)
        for f, source in plan.copy:
            target = join(self.staging, f.path)
            makedirs(os.path.dirname(target))
            _link_or_copy(source, target)
            if self.sync:
                fsync_path(target)  # verified in another tree, maybe never synced
                self._synced.add(f.path)
            incoming.put(f.path, f.size, f.sha256, f.revision, os.lstat(target))
        for f in plan.staged:
            incoming.put(f.path, f.size, f.sha256, f.revision, os.lstat(join(self.staging, f.path)))
        incoming.save()
        transferred = self._fetch_all(plan.fetch, incoming, client, api, workers)
        self._put_in_place(incoming, files)
        self.make_links(self.stale_links())
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
            target = join(self.staging, f.path)
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
        entries = [(f.path, f.size, f.sha256, f.revision) for f in files]
        new_model = not os.path.isdir(self.dir) and os.path.isdir(self.staging)
        # New metadata is written (and synced) beside the staged files first, so that only renames follow.
        stale = sorted(metadata) if new_model else self._stale_metadata(files)
        self.write_metadata(stale, metadata, self.resolved.created_at)
        synced = self._synced | set(stale)
        changed = set(incoming.files) | set(stale)
        if new_model or (not os.path.islink(self.dir) and self.complete_staging(changed)):
            # A new model appears complete in one rename; an update is swapped in whole. The files linked from
            # the old copy are synced too: an adopted file or a run with sync off left them verified but perhaps
            # never on disk (an fsync of a clean file costs little).
            self.seal(entries, self._facts(), synced)
            self.swap_in()
        else:
            self.move_in(changed, entries, self._facts(), synced)

    def _facts(self):
        return dict(model=self.model_id, revision=self.resolved.revision, commit=self.resolved.commit,
                    created_at=self.resolved.created_at, layout=self.layout, path=self.rel)

    def recover(self, keep_staged=True):
        """Finish or undo the swap of a killed run (call with the model's lock held); keeps verified downloads."""
        ModelState.recover(self, keep_staged)


def _readable(st):
    return st.st_mode & 0o444 == 0o444


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


def _link_or_copy(source, target):
    """A hard link when source and cache share a filesystem, else a copy."""
    unlink(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
