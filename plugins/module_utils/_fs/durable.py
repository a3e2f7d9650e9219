# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flush staged files and directories to disk before a rename publishes them.

A rename can reach the disk before the data of the file it names: after a power failure the name is
there with other bytes (zeros, or nothing) while the record calls the file verified. So every file
and directory of a staged model is fsynced before the rename or exchange that puts it in place, and
the directories that rename changed right after it, before the record of the new model takes its place.
"""


import ctypes
import ctypes.util
import os
import stat

SYNC_FILE_RANGE_WRITE = 2
_LIBC = []


def _sync_file_range():
    if not _LIBC:
        function = None
        try:
            function = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _LIBC.append(function)
    return _LIBC[0]


def start_writeback(fd, offset=0, length=0):
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` (0: to the end) to disk now, without
    waiting (Linux; elsewhere nothing), so that the fsync before the swap finds most of the data already there."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # only a hint: the fsync later is what counts


def fsync_path(path, follow=False):
    """fsync a file or directory by name (a symbolic link is followed only with ``follow``)."""
    flags = os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0) | (0 if follow else getattr(os, 'O_NOFOLLOW', 0))
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(*paths):
    """fsync each distinct directory of ``paths`` once (through a link to a directory, too)."""
    for path in sorted(set(paths)):
        fsync_path(path, follow=True)


def sync_tree(top, done=()):
    """fsync every regular file below ``top`` (but those whose relative path is in ``done``, synced already), then
    every directory, deepest first, ``top`` last. Symbolic links live in their directory's entries."""
    for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.relpath(path, top).replace(os.sep, '/') not in done and stat.S_ISREG(os.lstat(path).st_mode):
                fsync_path(path)
        fsync_path(dirpath)
