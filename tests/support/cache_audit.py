"""What a cache may hold after a fault, judged by the SDK's own rules rather than by the collection's code.

Every model directory of ``model_id`` that exists under a final name (the layout of any SDK generation)
must be complete for exactly one published version: every file of that version's listing there with its
bytes, nothing else, and for SDKs up to 1.37 a ``.msc`` (read with a loader that refuses every global)
listing exactly those files at the listing's revisions, with a well-formed ``.mdl`` and ``.mv``. Every
link in the cache resolves, inside the cache. Records of the collection name only published bytes.
What a run leaves behind while it works stays in scratch places nothing reads as a model
(``.modelseed/``, the SDKs' ``.lock`` and ``._____temp``). An absent or empty model directory is fine.

Versions are ``{repo path: bytes}``, or ``Version`` when the per-file revisions are known too
(``hub_versions`` reads them from the test hub, ``bundle_version`` from a bundle's model).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATE = ".modelseed"
MSC, MDL, MV = ".msc", ".mdl", ".mv"
# Names SDKs up to 1.37 drop from the listing: never required in their layouts, allowed when published.
UNLISTED_BY_OLD_SDKS = (".gitattributes", ".gitignore")
# Scratch the SDKs leave at the top of a cache root (1.15 writes its import index ast_indexer there).
SDK_SCRATCH = (".lock", "._____temp", "temp", "hub/._____temp", "hub/.lock", "models/._____temp", "models/.lock", "ast_indexer")
MV_TEXT = re.compile(r"Revision:[^,\s]+,CreatedAt:-?\d+")


@dataclass(frozen=True)
class Version:
    """One published commit: its files and, when known, each file's Revision as the hub lists it."""

    files: Mapping[str, bytes]
    revisions: Mapping[str, str] | None = None
    commit: str | None = None


def hub_versions(hub, model_id: str) -> list[Version]:
    """Every commit of ``model_id`` on a test hub (an ``MsHub`` or its root directory), oldest first."""
    from support.mshub import Store  # only the callers that pass a hub need it

    store = hub.store if hasattr(hub, "store") else Store(hub)
    repo = store.repo(*model_id.split("/"))
    if repo is None:
        return []
    if repo.versioned:
        meta = repo.meta()
        commits = sorted(meta["commits"], key=lambda c: meta["commits"][c].get("created_at", 0))
    else:
        commits = [repo.resolve("master")]
    out = []
    for commit in commits:
        items = repo.files(commit)
        out.append(Version({f.path: f.local.read_bytes() for f in items}, {f.path: repo.last_change(commit, f) for f in items}, commit))
    return out


def bundle_version(spec) -> Version:
    """The version a bundle's model (``support.bundles.ModelSpec``) installs, with the revisions its ``.msc`` lists."""
    commit = spec.resolved_commit()
    return Version(dict(spec.files), {path: spec.file_revisions.get(path, commit) for path in spec.files}, commit)


def audit_cache(cache: Path | str, model_id: str, *versions: Mapping[str, bytes] | Version) -> list[str]:
    """Problems found in ``cache`` for ``model_id``, of which ``versions`` are the published ones."""
    cache = Path(cache)
    if not cache.exists():
        return []
    versions = tuple(v if isinstance(v, Version) else Version(dict(v)) for v in versions)
    audit = _Audit(cache, model_id, versions)
    return audit.run()


class _Audit:
    def __init__(self, cache: Path, model_id: str, versions: tuple[Version, ...]) -> None:
        self.cache = cache
        self.real_cache = os.path.realpath(cache)
        self.model_id = model_id
        self.versions = versions
        self.published = {}  # repo path -> sha256 of each published version of it
        for version in versions:
            for path, data in version.files.items():
                self.published.setdefault(path, set()).add(_sha(data))
        self.problems: list[str] = []

    def run(self) -> list[str]:
        model_dirs = self._model_dirs()
        for rel, old_sdk in model_dirs.items():
            self._audit_model_dir(rel, old_sdk)
        for rel in self._links():
            self._audit_link(rel, model_dirs)
        for rel in self._regular_files():
            if not any(rel.startswith(top + "/") for top in model_dirs):
                self._audit_loose_file(rel)
        for record in self._records():
            self._audit_record(record)
        return self.problems

    # -- where the model lives --------------------------------------------------------------------

    def _model_dirs(self) -> dict[str, bool]:
        """{relative real directory: read by an SDK up to 1.37 (with metadata)} for every final name of the model."""
        owner, name = self.model_id.split("/", 1)
        escaped = name.replace(".", "___")
        metadata_names = {f"hub/{owner}/{escaped}", f"models/{owner}/{escaped}", f"{owner}/{name}", f"{owner}/{escaped}",
                          f"hub/{owner}/{name}", f"models/{owner}/{name}"}
        found = {rel: True for rel in sorted(metadata_names) if _is_real_dir(self.cache / rel)}
        snapshots = self.cache / "models" / f"{owner}--{name}" / "snapshots"
        if _is_real_dir(snapshots):
            for entry in sorted(os.listdir(snapshots)):
                rel = f"models/{owner}--{name}/snapshots/{entry}"
                if _is_real_dir(self.cache / rel):
                    found[rel] = False
                elif not os.path.islink(self.cache / rel):
                    self.problems.append(f"{rel}: a snapshot that is not a directory")
        return found

    def _entries(self):
        """(relative path, lstat) of everything below the cache root, links not followed."""
        for dirpath, dirnames, filenames in os.walk(self.cache):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, self.cache).replace(os.sep, "/"), os.lstat(path)

    def _links(self) -> list[str]:
        return sorted(rel for rel, st in self._entries() if stat.S_ISLNK(st.st_mode))

    def _regular_files(self) -> list[str]:
        return sorted(rel for rel, st in self._entries() if stat.S_ISREG(st.st_mode))

    def _inside(self, real: str) -> bool:
        return real == self.real_cache or real.startswith(self.real_cache + os.sep)

    # -- links ------------------------------------------------------------------------------------

    def _audit_link(self, rel: str, model_dirs: Mapping[str, bool]) -> None:
        path = self.cache / rel
        target = os.readlink(path)
        real = os.path.realpath(path)
        if not self._inside(real):
            self.problems.append(f"{rel}: a link out of the cache (-> {target})")
        elif not os.path.exists(path):
            self.problems.append(f"{rel}: a dangling link (-> {target})")
        elif os.path.isdir(path) and not rel.startswith(STATE + "/"):
            # A directory link is an alias of a model directory and nothing else.
            if os.path.relpath(real, self.real_cache).replace(os.sep, "/") not in model_dirs:
                self.problems.append(f"{rel}: links to {target}, which is not a model directory of {self.model_id}")

    # -- model directories ------------------------------------------------------------------------

    def _audit_model_dir(self, rel: str, old_sdk: bool) -> None:
        top = self.cache / rel
        files = {}
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                sub = os.path.relpath(path, top).replace(os.sep, "/")
                if stat.S_ISREG(st.st_mode) or (stat.S_ISLNK(st.st_mode) and os.path.isfile(path)):
                    files[sub] = path
                elif stat.S_ISLNK(st.st_mode) and os.path.isdir(path):
                    self.problems.append(f"{rel}/{sub}: a directory link inside a model directory")
                elif not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                    self.problems.append(f"{rel}/{sub}: not a regular file")
        metadata = {name: files.pop(name) for name in (MSC, MDL, MV) if old_sdk and name in files}
        if not files and not metadata:
            return  # an empty directory: every SDK reads it as absent
        digests = {sub: _sha_file(path) for sub, path in files.items()}
        exact = [v for v in self.versions if self._complete_for(v, digests, old_sdk)]
        if exact:
            candidates = exact
        else:
            best = self._closest(digests, old_sdk)
            self.problems.append(f"{rel}: not complete for any one published version of {self.model_id}")
            self._describe_gaps(rel, digests, best, old_sdk)
            candidates = [best] if best else []
        if old_sdk:
            self._audit_metadata(rel, metadata, digests, candidates)

    def _required(self, version: Version, old_sdk: bool) -> set[str]:
        return {p for p in version.files if not (old_sdk and p.rsplit("/", 1)[-1] in UNLISTED_BY_OLD_SDKS)}

    def _complete_for(self, version: Version, digests: Mapping[str, str], old_sdk: bool) -> bool:
        return (self._required(version, old_sdk) <= set(digests)
                and all(p in version.files and _sha(version.files[p]) == d for p, d in digests.items()))

    def _closest(self, digests: Mapping[str, str], old_sdk: bool) -> Version | None:
        def score(version: Version) -> tuple[int, int]:
            same = sum(1 for p, d in digests.items() if p in version.files and _sha(version.files[p]) == d)
            return same, -len(self._required(version, old_sdk) - set(digests))

        return max(self.versions, key=score, default=None)

    def _describe_gaps(self, rel: str, digests: Mapping[str, str], best: Version | None, old_sdk: bool) -> None:
        for path, digest in sorted(digests.items()):
            if path not in self.published:
                self.problems.append(f"{rel}/{path}: not a file of {self.model_id}")
            elif best is not None and path in best.files and _sha(best.files[path]) == digest:
                continue
            elif digest in self.published[path]:
                self.problems.append(f"{rel}/{path}: the bytes of another published version (files mixed from two commits)")
            else:
                self.problems.append(f"{rel}/{path}: not the published bytes of {path}")
        for path in sorted(self._required(best, old_sdk) - set(digests) if best else ()):
            self.problems.append(f"{rel}/{path}: missing")

    # -- SDK metadata (SDKs up to 1.37) -----------------------------------------------------------

    def _audit_metadata(self, rel: str, metadata: Mapping[str, str], digests: Mapping[str, str], candidates: list[Version]) -> None:
        if MSC not in metadata:
            self.problems.append(f"{rel}: no {MSC}, so SDKs up to 1.37 download every file again")
        else:
            entries, why = _read_msc(Path(metadata[MSC]))
            if entries is None:
                self.problems.append(f"{rel}/{MSC}: unreadable ({why})")
            elif candidates:
                found = [self._msc_problems(rel, entries, digests, v) for v in candidates]
                self.problems += min(found, key=len)
        if MDL in metadata:
            self.problems += self._mdl_problems(rel, Path(metadata[MDL]))
        if MV in metadata:
            text = Path(metadata[MV]).read_bytes()
            if not MV_TEXT.fullmatch(text.decode("ascii", "replace")):
                self.problems.append(f"{rel}/{MV}: not Revision:<revision>,CreatedAt:<unix time> but {text[:60]!r}")

    def _msc_problems(self, rel: str, entries: Mapping[str, str], digests: Mapping[str, str], version: Version) -> list[str]:
        out = []
        for path in sorted(self._required(version, True) - set(entries)):
            out.append(f"{rel}/{MSC}: does not list {path}")
        for path, revision in sorted(entries.items()):
            if path not in version.files or path not in digests:
                out.append(f"{rel}/{MSC}: lists {path}, which is not a file of this version in the directory")
            elif version.revisions is not None and revision != version.revisions.get(path):
                out.append(f"{rel}/{MSC}: {path} at revision {revision!r}, the hub lists {version.revisions.get(path)!r}")
            elif not revision:
                out.append(f"{rel}/{MSC}: {path} with an empty revision, which matches any commit")
        return out

    def _mdl_problems(self, rel: str, mdl: Path) -> list[str]:
        owner, name = self.model_id.split("/", 1)
        allowed = {f"{owner}/{name.replace('.', '___')}", f"{owner}/{name}"}
        try:
            data = _safe_load(mdl.read_bytes())
        except Exception as exc:  # any malformed pickle is junk
            return [f"{rel}/{MDL}: unreadable ({exc.__class__.__name__})"]
        if not isinstance(data, dict) or data.get("id") not in allowed:
            return [f"{rel}/{MDL}: does not name {self.model_id} ({str(data)[:80]})"]
        return []

    # -- everything outside the model directories -------------------------------------------------

    def _audit_loose_file(self, rel: str) -> None:
        waiting = rel.startswith(STATE + "/incoming/") and rel.count("/") > 2  # verified, to move into place
        if rel.startswith(STATE + "/") and not waiting:
            return  # scratch and state; records are audited on their own
        if any(rel == s or rel.startswith(s + "/") for s in SDK_SCRATCH):
            return
        repo_path = self._repo_path(rel)
        if repo_path is None:
            self.problems.append(f"{rel}: not a file of {self.model_id}")
        elif _sha_file(self.cache / rel) not in self.published[repo_path]:
            self.problems.append(f"{rel}: not the published bytes of {repo_path}")

    def _repo_path(self, rel: str) -> str | None:
        """The longest published path that ``rel`` ends with, on a directory boundary."""
        matches = [p for p in self.published if rel == p or rel.endswith("/" + p)]
        return max(matches, key=len) if matches else None

    def _records(self) -> list[Path]:
        return sorted((self.cache / STATE / "records").rglob("*.json")) + sorted((self.cache / STATE / "incoming").glob("*.json"))

    def _audit_record(self, record: Path) -> None:
        try:
            data = json.loads(record.read_text())
        except ValueError:
            self.problems.append(f"{record.name}: not JSON")
            return
        top = self.cache / data["path"] if "path" in data else record.with_suffix("")
        files = data.get("files") or {}
        if record.parent.name == "records" and files:
            # A record under records/ says its directory is complete: for one whole version, and there.
            if not top.is_dir():
                self.problems.append(f"{record.name}: records {data.get('path')}, which is not there")
                return
            whole = (self._required(v, True) <= set(files) <= set(v.files)
                     and all(e.get("sha256") == _sha(v.files[p]) for p, e in files.items()) for v in self.versions)
            if not any(whole):
                self.problems.append(f"{record.name}: does not record one whole published version of {self.model_id}")
        for rel, entry in sorted(files.items()):
            where = top / rel
            on_disk = _sha_file(where) if where.is_file() else None
            if entry.get("sha256") not in self.published.get(rel, ()) or on_disk != entry.get("sha256"):
                self.problems.append(f"{record.name}: records {rel} as verified, but it is missing or not the published bytes")


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _NoGlobals(pickle.Unpickler):
    """The SDK's metadata is plain lists, dicts and strings: anything that names a global is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _safe_load(data: bytes):
    return _NoGlobals(io.BytesIO(data)).load()


def _read_msc(path: Path) -> tuple[dict[str, str] | None, str]:
    """({Path: Revision}, "") from a ``.msc``, or (None, why) when an SDK could not use it."""
    try:
        entries = _safe_load(path.read_bytes())
    except Exception as exc:  # any malformed pickle or unreadable file
        return None, f"{exc.__class__.__name__}: {exc}"[:120]
    if not isinstance(entries, list):
        return None, f"a {type(entries).__name__}, not a list"
    out = {}
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("Path"), str) and isinstance(entry.get("Revision"), str)):
            return None, f"an entry that is not {{'Path': str, 'Revision': str}}: {str(entry)[:60]}"
        out[entry["Path"]] = entry["Revision"]
    return out, ""


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
            out[rel] = f"{st.st_mtime_ns} {_sha_file(path)}"
        else:
            out[rel] = "dir"
    return out


def lying_records(cache: Path | str) -> list[str]:
    """Record entries whose file is missing or holds other bytes than the record says it was verified with: what a
    crash or a power failure must never leave."""
    cache = Path(cache)
    problems = []
    for record in sorted((cache / STATE / "records").glob("*.json")):
        data = json.loads(record.read_text())
        for rel, entry in data.get("files", {}).items():
            path = cache / data["path"] / rel
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                problems.append(f"{record.name}: {rel}")
    return problems
