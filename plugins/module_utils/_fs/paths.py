# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File-system primitives: directories, atomic writes, free space, and removal that tolerates absence."""

import errno
import os
import posixpath
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError


def parent_dirs(paths):
    """Every directory leading to ``paths`` (relative POSIX paths)."""
    dirs = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return dirs


def makedirs(path, mode=0o755):
    """Create ``path`` and missing parents with ``mode`` (umask ignored)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        makedirs(parent, mode)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)


def _temp_prefix(path):
    return '.%s.' % os.path.basename(path)


def atomic_write(path, data, mode=0o644, sync=True, prepare=None):
    """Write ``data`` to a temp file beside ``path``, fsync it (with ``sync``), then rename over ``path``.

    ``prepare(fd)``, when given, sets owner, mode and times of the temp file instead of ``mode``."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix='.tmp', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            if prepare is None:
                os.fchmod(handle.fileno(), mode)
            else:
                prepare(handle.fileno())
            if sync:
                os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def read_bytes(path, limit=None):
    """File contents, or None when it does not exist."""
    try:
        with open(path, 'rb') as handle:
            return handle.read(limit) if limit else handle.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unlink_with_temps(path):
    """Remove ``path`` and what sweep_temps removes."""
    unlink(path)
    sweep_temps(path)


def sweep_temps(path):
    """Remove the temp files an atomic_write of ``path`` killed before its rename left beside it.

    Call only while holding the lock that serialises writers of ``path``."""
    remove_temps(os.path.dirname(path), _temp_prefix(path))


def remove_temps(directory, prefix, keep=()):
    """Delete ``<prefix>*.tmp`` in ``directory`` (but names in ``keep``): atomic writes a killed run left half done."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if name.startswith(prefix) and name.endswith('.tmp') and name not in keep:
            unlink(os.path.join(directory, name))


def lstat_or_none(path):
    """``os.lstat(path)``, or None when nothing is there."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def readlink_or_none(path):
    """The target of the link ``path``, or None when it is not a link."""
    try:
        return os.readlink(path)
    except OSError:
        return None


class NoSpace(ModelseedError):
    pass


def space_ran_out(exc, path, needed, doing, removed):
    """For an OSError raised while writing into ``path``: a NoSpace with the numbers when the disk filled up
    after require_space (another writer took the room), else None."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    st = os.statvfs(path)
    return NoSpace('%s in %s while %s: %d bytes needed, %d bytes free now; %s removed'
                   % (exc.strerror, path, doing, needed, st.f_bavail * st.f_frsize, removed))


def require_space(path, needed, what, inodes=0):
    """Fail before writing when the filesystem of ``path`` cannot take ``needed`` bytes (and ``inodes`` files)."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise NoSpace('not enough space in %s %s: %d bytes needed, %d bytes free' % (path, what, needed, free))
    if inodes and st.f_files and inodes > st.f_favail:
        raise NoSpace('not enough inodes in %s %s: %d needed, %d free' % (path, what, inodes, st.f_favail))
