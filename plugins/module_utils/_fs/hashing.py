# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming sha256 of files."""

import concurrent.futures
import hashlib

CHUNK = 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()


def update_from_file(digest, path, limit=None):
    """Feed the first ``limit`` bytes (all when None) of ``path`` to ``digest``; return the count."""
    done = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, 'rb', buffering=0) as handle:
        while limit is None or done < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - done)
            n = handle.readinto(view[:want])
            if not n:
                break
            digest.update(view[:n])
            done += n
    return done


def sha256_file(path):
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()


def sha256_files(paths, workers):
    """sha256 of each path, ``workers`` at a time (hashlib releases the GIL); None for a file that cannot be read."""
    def one(path):
        try:
            return sha256_file(path)
        except OSError:
            return None
    if not paths:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, paths))
