# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Directory trees: swap one for another in one step, link one into another, prune, delete.

``replace_dir`` puts a complete new directory where an old one is so that readers see entirely one or
the other: ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one step; where the kernel or filesystem
cannot exchange, the old directory is renamed aside first (for an instant the name is missing, never mixed).
"""


import ctypes
import ctypes.util
import errno
import os
import shutil
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.failpoints import failpoint
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import makedirs, unlink

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


def remove_tree(path):
    """Delete a file, link or directory tree, whatever it is."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


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
