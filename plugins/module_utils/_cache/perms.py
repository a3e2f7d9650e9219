# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Owner and modes of what is written into a cache, and the writes and directories that apply them."""

import os
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.durable import fsync_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write


class CacheError(ModelseedError):
    """A cache cannot be changed as asked (a directory on the way is a link or a file, say)."""


class Perms:
    """Who owns what is installed and with which modes.

    ``uid``/``gid`` None leave ownership to the running user. ``file_mode``/``dir_mode`` apply to
    everything written for a model: its files, its SDK metadata, its record, its lock, the directories
    above it and above its layout links, and the state directories. ``shared`` makes every directory
    setgid, so what SDKs create below inherits the group, makes ``.mdl``/``.mv`` group-writable
    (SDKs up to 1.37 rewrite them on every load) and the scratch directories SDKs write into
    group-writable. Nothing is ever world-writable: ``.mdl`` is a pickle every SDK process loads.
    """

    def __init__(self, uid=None, gid=None, file_mode=0o644, dir_mode=0o755, shared=False):
        self.uid = uid
        self.gid = gid
        self.shared = shared
        setgid = stat.S_ISGID if shared else 0
        self.file = file_mode
        self.dir = dir_mode | setgid
        self.writable_metadata = file_mode | (0o060 if shared else 0)
        self.shared_dir = (dir_mode | 0o070 | stat.S_ISGID) & ~0o002

    def file_mode(self, rel):
        if rel in (sdk_metadata.MDL, sdk_metadata.MV):
            return self.writable_metadata
        return self.file

    def owner_ok(self, st):
        return (self.uid is None or st.st_uid == self.uid) and (self.gid is None or st.st_gid == self.gid)

    def ok(self, st, mode):
        return self.owner_ok(st) and stat.S_IMODE(st.st_mode) == mode

    def chown(self, path, follow=True):
        if self.uid is not None or self.gid is not None:
            uid = -1 if self.uid is None else self.uid
            gid = -1 if self.gid is None else self.gid
            if follow:
                os.chown(path, uid, gid)
            else:
                os.lchown(path, uid, gid)

    def apply(self, path, mode):
        """chown, then chmod (a chown clears setgid bits)."""
        self.chown(path)
        os.chmod(path, mode)

    def apply_fd(self, fd, mode):
        if self.uid is not None or self.gid is not None:
            os.fchown(fd, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)
        os.fchmod(fd, mode)


def write_file(path, data, perms, mode, mtime, sync=True):
    """Write ``data`` beside ``path`` with its final owner, mode and mtime (if not None), then rename it over ``path``."""
    def prepare(fd):
        perms.apply_fd(fd, mode)
        if mtime is not None:
            os.utime(fd, ns=(mtime * 1000000000, mtime * 1000000000))
    atomic_write(path, data, sync=sync, prepare=prepare)
    if sync:
        fsync_dirs(os.path.dirname(path))


def ensure_dirs(root, rel, perms, mode=None):
    """Make the directories of ``rel`` below ``root``, refusing to go through a symlink: a user who
    may write in the cache must not be able to redirect an install elsewhere."""
    path = root
    for part in rel.split('/') if rel else []:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            else:
                perms.apply(path, perms.dir if mode is None else mode)
            st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError('%s is not a directory (%s): refusing to install through it' % (
                path, 'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'a file'))
    return path
