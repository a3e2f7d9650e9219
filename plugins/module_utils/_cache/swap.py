# -*- coding: utf-8 -*-
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put a complete new directory where an old one is, so that readers see entirely one or the other.

The new directory is built beside the old one (same filesystem), then
``renameat2(RENAME_EXCHANGE)`` swaps the two names in one step; the old copy,
now under the new one's former name, is moved to ``.modelseed/trash/`` and
deleted. Where the kernel or filesystem cannot exchange, the old directory is
renamed aside first (for an instant the name is missing, never mixed).

For model directories the record that describes the new content is saved
first as a pending record carrying the new directory's inode; a run killed
anywhere leaves it behind, and ``recover_pending`` promotes it if the swap
happened (the model directory has that inode) or drops it if not.

With ``sync`` (see durable.py) the staged tree and the pending record are on disk before the swap, the
old record is gone before it (no record ever describes a directory it does not match, even after a
power failure), and the directories the swap changed are synced before the new record takes its place.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import stat
import time
from urllib.parse import quote

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import absolute
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import lstat_or_none, makedirs, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import STATE_DIR, Record, state_path

PENDING_SUFFIX = '.install'
TRASH = 'trash'
AT_FDCWD = -100
RENAME_EXCHANGE = 2

_LIBC = []


def _renameat2():
    if not _LIBC:
        function = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True)
            function = libc.renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _LIBC.append(function)
    return _LIBC[0]


def exchange(first, second):
    """Swap two existing paths atomically; False when the kernel or filesystem cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), first)


def replace_dir(new, old, aside):
    """Put directory ``new`` at ``old``; return where the previous ``old`` now is (None if there was none).

    ``aside`` is where the previous directory goes when the kernel cannot exchange.
    """
    failpoint('swap.before')
    if not os.path.lexists(old):
        os.rename(new, old)
        moved = None
    elif exchange(new, old):
        moved = new
    else:
        makedirs(os.path.dirname(aside), 0o700)
        os.rename(old, aside)
        failpoint('swap.aside')
        os.rename(new, old)
        moved = aside
    failpoint('swap.after')
    return moved


def sync_replaced(new, old, moved):
    """fsync the directories whose entries ``replace_dir(new, old, ...)`` changed (it returned ``moved``)."""
    fsync_dirs(os.path.dirname(old), os.path.dirname(new), *([os.path.dirname(moved)] if moved else []))


def drop_record(record_path, sync=True):
    """Remove the record of a directory about to be replaced: after a power failure no record may call the new
    files verified with the old ones' facts."""
    try:
        os.unlink(record_path)
    except FileNotFoundError:
        return
    if sync:
        fsync_dirs(os.path.dirname(record_path))


def promote(pending_path, record_path, sync=True):
    """Rename the pending record of a swapped-in directory over its record."""
    failpoint('record.before')
    makedirs(os.path.dirname(record_path))
    os.rename(pending_path, record_path)
    if sync:
        fsync_dirs(os.path.dirname(record_path))
    failpoint('record.after')


def swap_in(root, rel, staging, record_path, sync=True):
    """Swap the staged directory (its pending record saved) into model directory ``rel`` and promote the record;
    return where the old copy now is (None if there was none)."""
    drop_record(record_path, sync)
    target = absolute(root, rel)
    old = replace_dir(staging, target, trash_path(root, rel))
    if sync:
        sync_replaced(staging, target, old)
    promote(state_path(root, 'incoming', rel, PENDING_SUFFIX), record_path, sync)
    return old


def trash_path(root, rel):
    return os.path.join(root, STATE_DIR, TRASH, '%s.%d.%d' % (quote(rel, safe=''), os.getpid(), time.monotonic_ns()))


def remove_tree(path):
    """Delete a file, link or directory tree, whatever it is."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


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


def prune_tree(top, keep):
    """Delete every file and link below ``top`` whose relative path is not in ``keep``, then emptied directories."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.relpath(path, top) not in keep:
                os.unlink(path)
        if dirpath != top and not os.listdir(dirpath):
            os.rmdir(dirpath)


def link_tree(source, target, keep):
    """Give ``target`` a hard link to every file and link of ``source`` not in ``keep`` (relative paths), and its
    directories with their modes: ``target`` then looks like ``source`` with the ``keep`` files replaced.

    Raises OSError where hard links cannot be made (another filesystem, protected_hardlinks).
    """
    for dirpath, dirnames, filenames in os.walk(source):
        relative = os.path.relpath(dirpath, source)
        into = os.path.normpath(os.path.join(target, relative))
        copy_mode(dirpath, into)
        for name in list(dirnames):
            path = os.path.join(into, name)
            if os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                filenames.append(name)
            elif not os.path.lexists(path):
                os.mkdir(path)
            elif not os.path.isdir(path) or os.path.islink(path):
                dirnames.remove(name)  # a new file has taken the name of an old directory
        for name in filenames:
            path = os.path.join(into, name)
            if os.path.normpath(os.path.join(relative, name)) not in keep and not os.path.lexists(path):
                os.link(os.path.join(dirpath, name), path, follow_symlinks=False)


def copy_mode(source, target):
    st = os.lstat(source)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    if os.geteuid() == 0:
        os.lchown(target, st.st_uid, st.st_gid)


def save_pending(root, rel, record, staging, sync=True, **facts):
    """Save ``record`` as the pending record of model ``rel``, tied to the inode of ``staging``."""
    top = os.lstat(staging)
    record.path = state_path(root, 'incoming', rel, PENDING_SUFFIX)
    record.save(dir_ino=top.st_ino, dir_dev=top.st_dev, **facts)
    if sync:
        fsync_dirs(os.path.dirname(record.path))
    return record.path


def recover_pending(root, rel, keep_unswapped=False):
    """Promote a pending record whose swap happened; drop the pending record otherwise.

    The staging directory goes when the swap happened (it holds the old copy then), and also when it did not
    unless ``keep_unswapped`` (its verified files are worth keeping for the next attempt).
    """
    pending_path = state_path(root, 'incoming', rel, PENDING_SUFFIX)
    staging = state_path(root, 'incoming', rel)
    promoted = False
    if os.path.exists(pending_path):
        pending = Record.load(pending_path)
        st = lstat_or_none(absolute(root, rel))
        if (st is not None and pending.files and pending.data.get('path') == rel
                and pending.data.get('dir_ino') == st.st_ino and pending.data.get('dir_dev') == st.st_dev):
            promote(pending_path, state_path(root, 'records', rel, '.json'))
            promoted = True
        else:
            unlink(pending_path)
    if os.path.lexists(staging) and (promoted or not keep_unswapped):
        discard(root, rel, staging)
        unlink(state_path(root, 'incoming', rel, '.json'))  # a modelscope_model record of that staging
    remove_temps(os.path.dirname(staging), '.%s.' % quote(rel, safe=''))
    return promoted


def remove_temps(directory, prefix, keep=()):
    """Delete ``<prefix>*.tmp`` in ``directory`` (but names in ``keep``): atomic writes a killed run left half done."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if name.startswith(prefix) and name.endswith('.tmp') and name not in keep:
            unlink(os.path.join(directory, name))
