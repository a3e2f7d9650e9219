"""SHA-256 of repository files, computed once per file version."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class Hasher:
    """Caches digests by inode, size and mtime, so a rewritten file is hashed again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple, str] = {}

    def sha256(self, path: Path, st: os.stat_result | None = None) -> str:
        st = st or path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._known.get(key)
        if known is None:
            known = sha256_file(path)
            with self._lock:
                self._known[key] = known
        return known
