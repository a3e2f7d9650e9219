"""A small filesystem of the test's own, to fill up: a tmpfs with a size limit (needs root)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mount: Path, size: str = "20m"):
    """Mount a tmpfs of ``size`` on ``mount`` (created), skip the test where mounting is not allowed, unmount after."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def mount_in_node(pid: int, path: str, size_bytes: int) -> Path:
    """Mount a tmpfs of ``size_bytes`` (rounded up to pages) on ``path`` inside the mount namespace of a fleet node whose
    sandbox runs as ``pid``; returns where this side sees it. It goes away with the node."""
    size_kib = -(-size_bytes // 4096) * 4
    subprocess.run(["nsenter", "-t", str(pid), "-m", "mkdir", "-p", path], check=True)
    subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", path],
                   check=True)
    return Path(f"/proc/{pid}/root") / path.lstrip("/")


def fill(path: Path) -> OSError | None:
    """Write zeros to ``path`` until the filesystem has no block left; the error that stopped it (None if none did)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    error = None
    try:
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                error = exc
    finally:
        os.close(fd)
    return error
