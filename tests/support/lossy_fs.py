"""A FUSE file system over a backing directory that loses what was not fsynced, as a power failure would.

Names, sizes, modes, owners and times reach the backing directory at once (as a journal commits metadata on its
own schedule); the bytes written to a file stay in this process's memory until an fsync of that file. Kill the
process and the backing directory holds what a disk would after the power came back: files under their final
names, of their final size, with zeros where the data never reached the disk.

    with LossyMount(backing, mountpoint) as mount:
        ...                      # work below mountpoint
        mount.power_loss()       # SIGKILL the file system, detach the mount; inspect backing

Runs as ``python lossy_fs.py BACKING MOUNTPOINT``; needs fusepy, libfuse2 and /dev/fuse (root).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def available() -> str | None:
    """Why the file system cannot run here, or None."""
    try:
        import fuse  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except (ImportError, OSError) as exc:
        return f"fusepy with libfuse2 is not installed ({exc})"
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        return "needs /dev/fuse and root"
    return None


class LossyMount:
    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing, self.mountpoint = backing, mountpoint
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LossyMount:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.backing), str(self.mountpoint)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.power_loss()
                raise RuntimeError(f"the lossy file system did not mount: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        return self

    def power_loss(self) -> None:
        """Kill the file system (its unsynced data goes with it) and detach the mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, check=False)

    def __exit__(self, *exc) -> None:
        self.power_loss()


def serve(backing: str, mountpoint: str) -> None:
    from fuse import FUSE, FuseOSError, Operations  # pylint: disable=import-outside-toplevel

    class Lossy(Operations):
        def __init__(self) -> None:
            self.dirty: dict[int, dict[int, bytes]] = {}  # inode -> {offset: bytes} written but not synced
            self.lock = threading.Lock()

        def __call__(self, op, path, *args):
            try:
                return super().__call__(op, path, *args)
            except OSError as exc:
                raise FuseOSError(exc.errno or errno.EIO) from exc

        def _real(self, path: str) -> str:
            return os.path.join(backing, path.lstrip("/"))

        def getattr(self, path, fh=None):
            st = os.lstat(self._real(path))
            keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
            return {key: getattr(st, key) for key in keys}

        def readdir(self, path, fh):
            return [".", "..", *os.listdir(self._real(path))]

        def readlink(self, path):
            return os.readlink(self._real(path))

        def statfs(self, path):
            st = os.statvfs(self._real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
            return {key: getattr(st, key) for key in keys}

        def chmod(self, path, mode):
            os.chmod(self._real(path), mode)

        def chown(self, path, uid, gid):
            os.lchown(self._real(path), uid, gid)

        def utimens(self, path, times=None):
            os.utime(self._real(path), times, follow_symlinks=False)

        def mkdir(self, path, mode):
            os.mkdir(self._real(path), mode)

        def rmdir(self, path):
            os.rmdir(self._real(path))

        def unlink(self, path):
            os.unlink(self._real(path))

        def symlink(self, target, source):
            os.symlink(source, self._real(target))

        def link(self, target, source):
            os.link(self._real(source), self._real(target))

        def rename(self, old, new):
            os.rename(self._real(old), self._real(new))

        def open(self, path, flags):
            # The kernel gives every write its offset: O_APPEND on the backing file would move it.
            return os.open(self._real(path), flags & ~(os.O_CREAT | os.O_EXCL | os.O_APPEND))

        def create(self, path, mode, fi=None):
            return os.open(self._real(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)

        def truncate(self, path, length, fh=None):
            os.truncate(self._real(path), length)
            ino = os.lstat(self._real(path)).st_ino
            with self.lock:
                pieces = self.dirty.get(ino, {})
                for offset in [o for o in pieces if o >= length]:
                    del pieces[offset]

        def write(self, path, data, offset, fh):
            st = os.fstat(fh)
            with self.lock:
                self.dirty.setdefault(st.st_ino, {})[offset] = bytes(data)
            if offset + len(data) > st.st_size:
                os.ftruncate(fh, offset + len(data))  # the size is metadata: it gets there, the bytes do not
            return len(data)

        def read(self, path, size, offset, fh):
            out = bytearray(os.pread(fh, size, offset))
            with self.lock:
                pieces = sorted(self.dirty.get(os.fstat(fh).st_ino, {}).items())
            for start, data in pieces:
                lo, hi = max(start, offset), min(start + len(data), offset + len(out))
                if lo < hi:
                    out[lo - offset:hi - offset] = data[lo - start:hi - start]
            return bytes(out)

        def fsync(self, path, datasync, fh):
            with self.lock:
                pieces = self.dirty.pop(os.fstat(fh).st_ino, {})
            out = os.open(f"/proc/self/fd/{fh}", os.O_WRONLY)  # the caller may have opened it read-only
            try:
                for offset, data in sorted(pieces.items()):
                    os.pwrite(out, data, offset)
                os.fsync(out)
            finally:
                os.close(out)

        def fsyncdir(self, path, datasync, fh):
            return 0

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            os.close(fh)

    # use_ino: the backing inode numbers, which pending records are tied to, survive a remount.
    FUSE(Lossy(), mountpoint, foreground=True, nothreads=False, default_permissions=True, use_ino=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
