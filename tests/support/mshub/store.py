"""Model repositories on disk, as the hub serves them.

Simple form: ``ROOT/<owner>/<name>/<files>`` is branch ``master`` at one commit whose id is derived
from the content. Versioned form: ``ROOT/<owner>/<name>/.hub/refs.json`` names branches, tags (with the
date each was made, the ``CreatedAt`` old SDKs choose a default revision by) and commits, and the tree
of commit C is ``ROOT/<owner>/<name>/.hub/commits/C/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .hashing import Hasher

HUB_DIR = ".hub"
REFS_FILE = "refs.json"
COMMITS_DIR = "commits"
MASTER = "master"


@dataclass(frozen=True)
class RepoFile:
    path: str  # posix path inside the repository
    size: int
    sha256: str
    local: Path
    executable: bool
    mtime: int


@dataclass(frozen=True)
class Ref:
    name: str
    commit: str
    created_at: int


def content_id(files: Iterable[RepoFile], salt: str = "") -> str:
    """A 40-hex commit id that changes whenever a path, a size or a digest changes."""
    digest = hashlib.sha1(salt.encode())
    for item in sorted(files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.size}\0{item.sha256}\n".encode())
    return digest.hexdigest()


def safe_parts(path: str) -> list[str] | None:
    parts = path.strip("/").split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def _repo_file(rel: str, local: Path, st: os.stat_result, hasher: Hasher) -> RepoFile:
    return RepoFile(rel, st.st_size, hasher.sha256(local, st), local, bool(st.st_mode & 0o111), int(st.st_mtime))


def scan_tree(top: Path, hasher: Hasher, skip_top: Iterable[str] = ()) -> list[RepoFile]:
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if here == top:
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        dirnames.sort()
        for name in sorted(filenames):
            local = here / name
            try:
                st = local.stat()
            except OSError:  # dangling symlink
                continue
            if stat.S_ISREG(st.st_mode):
                rel = local.relative_to(top).as_posix()
                found.append(_repo_file(rel, local, st, hasher))
    return found


class Repo:
    def __init__(self, top: Path, model_id: str, hasher: Hasher) -> None:
        self.top = top
        self.model_id = model_id
        self._hasher = hasher

    @property
    def versioned(self) -> bool:
        return (self.top / HUB_DIR / REFS_FILE).is_file()

    def meta(self) -> dict:
        """refs.json, read on every call so commits pushed while serving are seen."""
        meta = json.loads((self.top / HUB_DIR / REFS_FILE).read_text())
        for key in ("branches", "tags", "commits"):
            meta.setdefault(key, {})
        return meta

    def _simple_files(self) -> list[RepoFile]:
        return scan_tree(self.top, self._hasher, skip_top=(HUB_DIR, ".git"))

    def _simple_master(self) -> Ref:
        # One scan gives both: hashing is cached, but walking a large tree on every call still shows.
        files = self._simple_files()
        return Ref(MASTER, content_id(files), max((f.mtime for f in files), default=int(self.top.stat().st_mtime)))

    def commit_info(self, commit: str) -> dict:
        if not self.versioned:
            return {"message": "", "created_at": self._simple_master().created_at, "parent": None}
        info = self.meta()["commits"].get(commit, {})
        created = info.get("created_at") or int(self.tree(commit).stat().st_mtime)
        return {"message": info.get("message", ""), "created_at": int(created), "parent": info.get("parent")}

    def _refs(self, kind: str) -> list[Ref]:
        if not self.versioned:
            return [self._simple_master()] if kind == "branches" else []
        meta = self.meta()
        # A tag's date is when it was made (older repositories: its commit's); a branch's is its head commit's.
        dates = meta.get("tag_dates", {}) if kind == "tags" else {}
        refs = [Ref(name, commit, int(dates.get(name) or self.commit_info(commit)["created_at"])) for name, commit in meta[kind].items()]
        # The real hub lists tags newest first; old SDKs take the first one as "latest".
        return sorted(refs, key=lambda r: r.created_at, reverse=True)

    def branches(self) -> list[Ref]:
        return self._refs("branches")

    def tags(self) -> list[Ref]:
        return self._refs("tags")

    def resolve(self, revision: str | None) -> str | None:
        """Commit id for a branch, a tag or a full commit id; None if unknown."""
        revision = revision or MASTER
        if not self.versioned:
            commit = self._simple_master().commit
            return commit if revision in (MASTER, commit) else None
        meta = self.meta()
        commit = meta["branches"].get(revision) or meta["tags"].get(revision)
        if commit is None and len(revision) == 40 and (self.top / HUB_DIR / COMMITS_DIR / revision).is_dir():
            commit = revision
        return commit

    def tree(self, commit: str) -> Path:
        return self.top / HUB_DIR / COMMITS_DIR / commit if self.versioned else self.top

    def tree_of(self, revision: str | None) -> Path | None:
        """Where files of ``revision`` are read from; None if the revision is unknown."""
        if not self.versioned and (revision or MASTER) == MASTER:
            return self.top  # serving one file must not cost a walk of the whole tree
        commit = self.resolve(revision)
        return None if commit is None else self.tree(commit)

    def files(self, commit: str) -> list[RepoFile]:
        return scan_tree(self.tree(commit), self._hasher) if self.versioned else self._simple_files()

    def file(self, commit: str, path: str) -> RepoFile | None:
        return self.file_at(self.tree(commit), path)

    def file_at(self, tree: Path, path: str) -> RepoFile | None:
        parts = safe_parts(path)
        if parts is None or (tree == self.top and parts[0] in (HUB_DIR, ".git")):
            return None
        local = tree.joinpath(*parts)
        try:
            st = local.stat()
        except OSError:
            return None
        return _repo_file("/".join(parts), local, st, self._hasher) if stat.S_ISREG(st.st_mode) else None

    def last_change(self, commit: str, item: RepoFile) -> str:
        """The oldest commit, going back from ``commit``, since which the file is unchanged (its git blame)."""
        if not self.versioned:
            return commit
        commits = self.meta()["commits"]
        found = commit
        parent = commits.get(commit, {}).get("parent")
        while parent:
            earlier = self.file(parent, item.path)
            if earlier is None or earlier.sha256 != item.sha256:
                break
            found, parent = parent, commits.get(parent, {}).get("parent")
        return found


class Store:
    """All repositories under one root directory."""

    def __init__(self, root: Path | str, hasher: Hasher | None = None) -> None:
        self.root = Path(root)
        self.hasher = hasher or Hasher()

    def repo(self, owner: str, name: str) -> Repo | None:
        if any(not part or part.startswith(".") or "/" in part for part in (owner, name)):
            return None
        top = self.root / owner / name
        return Repo(top, f"{owner}/{name}", self.hasher) if top.is_dir() else None
