"""JSON bodies in the shapes the ModelScope API uses."""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import uuid
from collections.abc import Callable

from .store import Ref, Repo, RepoFile

# The real hub cuts every repo/files answer here, recursive or one level deep, without saying so (modelscope-hub's
# REPO_FILES_TRUNCATION_LIMIT); SDK 1.40 then lists Root= subtrees, and only warns about a directory it cannot.
LISTING_CAP = 3000


def envelope(data, code: int = 200, message: str = "success") -> bytes:
    body = {"Code": code, "Success": code == 200, "Message": message, "RequestId": uuid.uuid4().hex, "Data": data}
    return json.dumps(body).encode()


def model_info(repo: Repo) -> dict:
    owner, name = repo.model_id.split("/")
    commit = repo.resolve(None)
    created = repo.commit_info(commit)["created_at"] if commit else 0
    return {
        "Id": int(hashlib.sha1(repo.model_id.encode()).hexdigest()[:8], 16),
        "Name": name,
        "Path": owner,
        "ChineseName": name,
        "Description": "",
        "License": "Apache License 2.0",
        "ModelType": [],
        "Tasks": [],
        "Visibility": 5,
        "IsPublished": 1,
        "Downloads": 0,
        "CreatedTime": created,
        "LastUpdatedTime": created,
    }


def _ref(ref: Ref) -> dict:
    return {"Revision": ref.name, "CommitId": ref.commit, "CreatedAt": ref.created_at, "Message": ""}


def revision_map(repo: Repo, end_time: int | None = None) -> dict:
    tags = [t for t in repo.tags() if end_time is None or t.created_at <= end_time]
    return {"RevisionMap": {"Branches": [_ref(b) for b in repo.branches()], "Tags": [_ref(t) for t in tags]}}


def _blob(repo: Repo, commit: str, item: RepoFile, lfs_min: int, sha256: str, commit_info: Callable[[str], dict]) -> dict:
    changed_in = repo.last_change(commit, item)
    info = commit_info(changed_in)
    return {
        "Name": posixpath.basename(item.path),
        "Path": item.path,
        "Type": "blob",
        "Size": item.size,
        "Sha256": sha256,
        "Revision": changed_in,  # the commit that last changed this file, as in git blame
        "CommitId": changed_in,
        "CommitMessage": info["message"],
        "CommittedDate": info["created_at"],
        "CommitterName": "mshub",
        "IsLFS": item.size > lfs_min,
        "Mode": "100755" if item.executable else "100644",
        "InCheck": False,
    }


def _tree(path: str, commit: str) -> dict:
    return {"Name": posixpath.basename(path), "Path": path, "Type": "tree", "Size": 0, "Sha256": "", "Revision": commit, "IsLFS": False, "Mode": "40000"}


def listing(repo: Repo, commit: str, root: str, recursive: bool, lfs_min: int, sha_for: Callable[[RepoFile], str]) -> list[dict] | None:
    """Entries under ``root`` ('' for the top), directories included; None when ``root`` is not a directory."""
    root = root.strip("/")
    prefix = root + "/" if root else ""
    files = [f for f in repo.files(commit) if f.path.startswith(prefix)]
    if root and not files:
        return None
    dirs: set[str] = set()
    entries = []
    commit_info = functools.lru_cache(maxsize=None)(repo.commit_info)  # one look-up per commit, not per file
    for item in files:
        rest = item.path[len(prefix) :].split("/")
        if not recursive and len(rest) > 1:
            dirs.add(prefix + rest[0])
            continue
        dirs.update(prefix + "/".join(rest[: i + 1]) for i in range(len(rest) - 1))
        entries.append(_blob(repo, commit, item, lfs_min, sha_for(item), commit_info))
    return ([_tree(d, commit) for d in sorted(dirs)] + entries)[:LISTING_CAP]
