"""What a cache holds after a fault: every file under a final name, in SDK metadata or in a record must be
one the hub published, byte for byte. Whatever else a run leaves (partial downloads) stays under
``.modelseed/partial``, which nothing reads as a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Mapping

from ansible_collections.modelseed.fleet.plugins.module_utils.sdk_metadata import METADATA_FILES, read_msc

STATE = ".modelseed"


def audit_cache(cache: Path | str, model_id: str, *versions: Mapping[str, bytes]) -> list[str]:
    """Problems found: files under a final name, ``.msc`` entries and record entries whose bytes are not
    those of a published version of ``model_id`` (any of ``versions``: {repo path: bytes})."""
    cache = Path(cache)
    if not cache.exists():
        return []
    digests = {path: {hashlib.sha256(data).hexdigest() for data in (v[path] for v in versions if path in v)}
               for version in versions for path in version}
    problems = []
    for path in _files(cache):
        rel = path.relative_to(cache).as_posix()
        waiting = rel.startswith(STATE + "/incoming/") and rel.count("/") > 2  # verified, to move into place
        if rel.startswith(STATE + "/") and not waiting:
            continue  # scratch and state; records are audited below
        if path.name in METADATA_FILES:
            problems += _audit_msc(path, digests) if path.name == ".msc" else []
            continue
        repo_path = _repo_path(rel, digests)
        if repo_path is None:
            problems.append(f"{rel}: not a file of {model_id}")
        elif _sha256(path) not in digests[repo_path]:
            problems.append(f"{rel}: not the published bytes of {repo_path}")
    for record in sorted((cache / STATE / "records").rglob("*.json")) + sorted((cache / STATE / "incoming").glob("*.json")):
        problems += _audit_record(cache, record, digests)
    return problems


def _files(top: Path):
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = Path(dirpath, name)
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def _repo_path(rel: str, digests: Mapping[str, set]) -> str | None:
    """The longest published path that ``rel`` ends with, on a directory boundary."""
    matches = [p for p in digests if rel == p or rel.endswith("/" + p)]
    return max(matches, key=len) if matches else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audit_msc(msc: Path, digests) -> list[str]:
    problems = []
    for listed in read_msc(msc.read_bytes()):
        beside = msc.parent / listed
        if not beside.is_file() or _sha256(beside) not in digests.get(listed, ()):
            problems.append(f"{msc}: lists {listed}, which is missing or not the published bytes")
    return problems


def _audit_record(cache: Path, record: Path, digests) -> list[str]:
    try:
        data = json.loads(record.read_text())
    except ValueError:
        return [f"{record}: not JSON"]
    top = cache / data["path"] if "path" in data else record.with_suffix("")
    problems = []
    for rel, entry in (data.get("files") or {}).items():
        where = top / rel
        on_disk = _sha256(where) if where.is_file() else None
        if entry.get("sha256") not in digests.get(rel, ()) or on_disk != entry.get("sha256"):
            problems.append(f"{record.name}: records {rel} as verified, but it is missing or not the published bytes")
    return problems


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every entry under ``root`` but those under ``skip`` prefixes: files by content and mtime, links by target."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = "-> " + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = f"{st.st_mtime_ns} {_sha256(path)}"
        else:
            out[rel] = "dir"
    return out
