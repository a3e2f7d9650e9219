"""Create and change hub repositories from tests."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .hashing import Hasher
from .store import COMMITS_DIR, HUB_DIR, MASTER, REFS_FILE, Repo, content_id, safe_parts, scan_tree

Content = bytes | str | None  # None deletes the path in push_commit


def _write(path: Path, data: bytes | str) -> None:
    # Replace instead of writing in place: trees of earlier commits share files through hard links.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _apply(tree: Path, files: Mapping[str, Content]) -> None:
    for rel, data in files.items():
        parts = safe_parts(rel)
        if parts is None:
            raise ValueError(f"not a relative path inside a repository: {rel!r}")
        target = tree.joinpath(*parts)
        if data is None:
            target.unlink(missing_ok=True)
        else:
            _write(target, data)


def _save_meta(top: Path, meta: dict) -> None:
    _write(top / HUB_DIR / REFS_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _commit(top: Path, meta: dict, parent: str | None, files: Mapping[str, Content], message: str, created_at: int | None) -> str:
    """Build the tree of a new commit from its parent's tree plus ``files``, then name it by content."""
    commits = top / HUB_DIR / COMMITS_DIR
    staging = Path(tempfile.mkdtemp(dir=commits.parent, prefix=".new-"))
    tree = staging / "tree"
    if parent:
        shutil.copytree(commits / parent, tree, copy_function=os.link, symlinks=True)
    else:
        tree.mkdir()
    _apply(tree, files)
    created_at = int(created_at or time.time())
    commit = content_id(scan_tree(tree, Hasher()), salt=f"{parent}\0{message}\0{created_at}")
    commits.mkdir(parents=True, exist_ok=True)
    if (commits / commit).exists():  # the very same commit again, as git would name it
        shutil.rmtree(staging)
    else:
        tree.rename(commits / commit)
        staging.rmdir()
    meta["commits"][commit] = {"parent": parent, "message": message, "created_at": created_at}
    return commit


def make_repo(
    root: Path | str,
    model_id: str,
    files: Mapping[str, bytes | str],
    *,
    tags: Iterable[str] = (),
    versioned: bool | None = None,
    message: str = "initial commit",
    created_at: int | None = None,
) -> str:
    """Create a repository and return the commit id of ``master``.

    Without tags (and unless ``versioned``) the simple form is written; otherwise the versioned form,
    with every tag in ``tags`` pointing at the first commit.
    """
    top = Path(root, *model_id.split("/"))
    if top.exists():
        raise FileExistsError(top)
    tags = list(tags)
    if not (tags or versioned):
        _apply(top, files)
        return Repo(top, model_id, Hasher()).resolve(MASTER)
    (top / HUB_DIR).mkdir(parents=True)
    meta: dict = {"branches": {}, "tags": {}, "commits": {}}
    commit = _commit(top, meta, None, files, message, created_at)
    meta["branches"][MASTER] = commit
    _add_tags(meta, tags, commit, meta["commits"][commit]["created_at"])
    _save_meta(top, meta)
    return commit


def _add_tags(meta: dict, names: Iterable[str], commit: str, created_at: int) -> None:
    """Point tags at ``commit``; a tag is dated when it was made, as the hub's CreatedAt of a tag is."""
    for name in names:
        meta["tags"][name] = commit
        meta.setdefault("tag_dates", {})[name] = int(created_at)


def push_commit(
    root: Path | str,
    model_id: str,
    files: Mapping[str, Content],
    *,
    branch: str = MASTER,
    message: str = "update",
    tags: Iterable[str] = (),
    created_at: int | None = None,
) -> str:
    """Add a commit on ``branch`` (created from master if new): the parent's files changed by ``files``."""
    top = Path(root, *model_id.split("/"))
    repo = Repo(top, model_id, Hasher())
    if not repo.versioned:
        raise ValueError(f"{model_id} is in the simple form; create it with make_repo(..., versioned=True)")
    meta = repo.meta()
    parent = meta["branches"].get(branch) or meta["branches"][MASTER]
    commit = _commit(top, meta, parent, files, message, created_at)
    meta["branches"][branch] = commit
    _add_tags(meta, tags, commit, meta["commits"][commit]["created_at"])
    _save_meta(top, meta)
    return commit


def tag(root: Path | str, model_id: str, name: str, revision: str = MASTER, *, created_at: int | None = None) -> str:
    """Point tag ``name`` at ``revision`` (a branch, tag or commit), dated ``created_at`` (now), and return the commit id."""
    top = Path(root, *model_id.split("/"))
    repo = Repo(top, model_id, Hasher())
    if not repo.versioned:
        raise ValueError(f"{model_id} is in the simple form, which has no tags")
    commit = repo.resolve(revision)
    if commit is None:
        raise KeyError(f"{model_id} has no revision {revision!r}")
    meta = repo.meta()
    _add_tags(meta, [name], commit, created_at or time.time())
    _save_meta(top, meta)
    return commit
